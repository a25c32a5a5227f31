"""Choosing the CPU path per machine (dreamcore.kernel_choice): measured once, cached, never slower."""

from __future__ import annotations

import sys
import time

import pytest
import torch
from tiny import frozen_random

from dreamcore import kernel_choice, native
from dreamcore.cli import main
from dreamcore.devices import cpu_flags
from dreamcore.gradients import TiledGradient, native_stages, prepare_for_speed
from dreamcore.networks import Network
from dreamcore.networks.efficientnet_lite import EfficientNetLite
from dreamcore.objectives import parse

needs_compiler = pytest.mark.skipif(
    native.compiler() is None or not sys.platform.startswith("linux"),
    reason="no C++ compiler here (./test.sh installs g++ on Debian)",
)


@pytest.fixture
def choices(tmp_path, monkeypatch):
    """An empty cache of choices (the compiled kernels stay where they are), and no forcing."""
    path = tmp_path / "choices.json"
    monkeypatch.setattr(kernel_choice, "choices_file", lambda: path)
    monkeypatch.delenv("DREAMCORE_NATIVE", raising=False)
    return path


@pytest.fixture(scope="module")
def lite0() -> Network:
    module = frozen_random(EfficientNetLite, "lite0")
    return prepare_for_speed(
        Network("lite0", module, module.stages(), [str(i) for i in range(1000)], (0.5,) * 3, (0.5,) * 3, 224)
    )


class Timings:
    """A stand-in for timing the two paths: fixed seconds per path, and a count of the calls."""

    def __init__(self, native_seconds: float, pytorch_seconds: float) -> None:
        self.seconds = {True: native_seconds, False: pytorch_seconds}
        self.calls = 0

    def __call__(self, use_native: bool) -> float:
        self.calls += 1
        return self.seconds[use_native]


NATIVE = kernel_choice.KernelPath(True, "measured")  # fp32 on the native kernels


def refuse_to_measure(_use_native: bool) -> float:
    raise AssertionError("measured again although the choice was cached")


class SlowLibrary:
    """The real compiled kernels with every fused forward pass made 20 ms slower."""

    def __init__(self, library) -> None:
        self.library = library
        self.forward_calls = 0

    def __getattr__(self, name):
        return getattr(self.library, name)

    def dw_forward(self, *args):
        self.forward_calls += 1
        time.sleep(0.02)
        return self.library.dw_forward(*args)


@needs_compiler
def test_a_native_path_made_slow_loses_to_pytorchs_and_is_switched_off(choices, monkeypatch, lite0) -> None:
    slow = SlowLibrary(native.native_library())
    monkeypatch.setattr(native, "native_library", lambda: slow)
    gradient = TiledGradient(lite0, parse("block9", lite0.catalog), tile_size=64, precision="fp32")
    assert gradient.kernel_path.native is False
    assert "PyTorch measured faster" in gradient.kernel_path.reason and "64x64" in gradient.kernel_path.reason
    measured_calls = slow.forward_calls
    assert measured_calls >= 4 * 10  # both paths were really timed: blocks 0 to 9, warm-up and rounds
    stages = native_stages(lite0.module)
    assert len(stages) == 17 and not any(stage.use_native for stage in stages)  # 16 blocks and the stem
    gradient(torch.rand(1, 3, 48, 56))
    assert slow.forward_calls == measured_calls  # the dream itself took PyTorch's path
    assert choices.exists()


@needs_compiler
def test_the_faster_native_path_is_kept_and_its_cached_choice_honoured(choices, lite0) -> None:
    timings = Timings(0.010, 0.025)
    first = kernel_choice.choose_kernel_path("lite0", timings, "64x64 gradient to block9")
    assert first.native is True and timings.calls == 2 + 2 * kernel_choice.ROUNDS
    assert (
        first.reason
        == "native measured faster on this machine: native 10 ms, PyTorch 25 ms per 64x64 gradient to block9"
    )
    again = kernel_choice.choose_kernel_path("lite0", refuse_to_measure, "64x64 gradient to block9")
    assert again == first
    # A new dream (a new process would read the same file) switches the network's parts without measuring.
    for stage in native_stages(lite0.module):
        stage.use_native = False
    gradient = TiledGradient(lite0, parse("block9", lite0.catalog), tile_size=64, precision="fp32")
    assert gradient.kernel_path == first and all(stage.use_native for stage in native_stages(lite0.module))


@needs_compiler
def test_a_changed_kernel_source_or_cpu_measures_again(choices, monkeypatch, tmp_path) -> None:
    kernel_choice.choose_kernel_path("lite0", Timings(0.010, 0.020), "shape")
    edited = tmp_path / "native_kernels.cpp"
    edited.write_text(native.SOURCE.read_text() + "\n// a change\n")
    with monkeypatch.context() as patched:
        patched.setattr(native, "SOURCE", edited)
        changed = Timings(0.030, 0.020)
        assert kernel_choice.choose_kernel_path("lite0", changed, "shape").native is False
        assert changed.calls > 0
    with monkeypatch.context() as patched:
        patched.setattr(kernel_choice, "cpu_model", lambda: "Another CPU")
        other_cpu = Timings(0.030, 0.020)
        assert kernel_choice.choose_kernel_path("lite0", other_cpu, "shape").native is False
        assert other_cpu.calls > 0
    # Back on the original source and CPU, the first measurement still stands.
    assert kernel_choice.choose_kernel_path("lite0", refuse_to_measure, "shape").native is True
    assert kernel_choice.choose_kernel_path("googlenet", Timings(0.5, 0.4), "shape").native is False  # per network


@needs_compiler
def test_a_corrupt_cache_file_is_measured_afresh(choices) -> None:
    choices.write_text("{not json")
    timings = Timings(0.010, 0.020)
    assert kernel_choice.choose_kernel_path("lite0", timings, "shape").native is True and timings.calls > 0


def test_dreamcore_native_forces_either_path_without_measuring(choices, monkeypatch) -> None:
    monkeypatch.setenv("DREAMCORE_NATIVE", "1")
    forced = kernel_choice.choose_kernel_path("lite0", refuse_to_measure, "shape")
    assert forced == kernel_choice.KernelPath(True, "forced by DREAMCORE_NATIVE=1")
    monkeypatch.setenv("DREAMCORE_NATIVE", "0")
    assert kernel_choice.choose_kernel_path("lite0", refuse_to_measure, "shape").native is False
    assert not choices.exists()


def test_reduced_precision_dreams_say_they_take_pytorchs_path(choices, lite0) -> None:
    gradient = TiledGradient(lite0, parse("block3", lite0.catalog), tile_size=64, precision="bf16")
    assert gradient.kernel_path.native is False and "bfloat16" in gradient.kernel_path.reason


@needs_compiler
def test_models_and_print_settings_show_the_path_and_why(choices, capsys, tmp_path) -> None:
    kernel_choice.choose_kernel_path("lite0", Timings(0.012, 0.030), "384x384 gradient to block9")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lite0          native CPU kernels (native measured faster on this machine: native 12 ms" in out
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (48, 40), "orange").save(photo)
    args = ["dream", str(photo), "-o", str(tmp_path / "out.png"), "--iterations", "1", "--octaves", "1"]
    assert main([*args, "--precision", "fp32", "--print-settings", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Computed with native CPU kernels (native measured faster on this machine: native 12 ms" in err


@needs_compiler
@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="needs a CPU that runs AVX2 code")
def test_the_avx2_build_computes_the_native_builds_values_bit_for_bit(monkeypatch) -> None:
    """Blocks and vectors are sized per instruction set; each value is still summed in one order."""
    from test_native import depthwise_conv, expand_conv

    outputs = []
    try:
        for arch in ("x86-64-v3", ""):
            monkeypatch.setenv("DREAMCORE_NATIVE_ARCH", arch)
            native.native_library.cache_clear()
            assert native.native_library() is not None
            for channels, kernel, stride, channels_in, size in [(48, 3, 2, 16, (21, 30)), (144, 5, 1, 24, (17, 33))]:
                stage = native.FusedDepthwise(
                    depthwise_conv(channels, kernel, stride), expand_conv(channels_in, channels)
                )
                generator = torch.Generator().manual_seed(1)
                x = (torch.randn(1, channels_in, *size, generator=generator) * 2 + 3).requires_grad_(True)
                y = stage(x)
                (grad_x,) = torch.autograd.grad(y, x, torch.randn(y.shape, generator=generator))
                outputs.append((y.detach(), grad_x))
    finally:
        monkeypatch.delenv("DREAMCORE_NATIVE_ARCH")
        native.native_library.cache_clear()
    half = len(outputs) // 2
    for (y_avx2, grad_avx2), (y_native, grad_native) in zip(outputs[:half], outputs[half:], strict=True):
        assert torch.equal(y_avx2, y_native) and torch.equal(grad_avx2, grad_native)


def test_reduced_precision_is_kept_only_where_it_measured_faster(choices) -> None:
    slower = Timings(0.030, 0.020)  # reduced precision 30 ms, fp32 20 ms (lite0 in bf16 on an AMX CPU)
    assert kernel_choice.choose_reduced_precision("lite0", slower, "shape", NATIVE) is False and slower.calls > 0
    assert kernel_choice.choose_reduced_precision("lite0", refuse_to_measure, "shape", NATIVE) is False  # cached
    faster = Timings(0.010, 0.040)  # VGG16's dense convolutions on AMX
    assert kernel_choice.choose_reduced_precision("vgg16", faster, "shape", NATIVE) is True
    assert set(kernel_choice.measured_choices()) == set()  # precision entries are not kernel paths
    # fp32 on PyTorch's path is another comparison, measured on its own
    other = Timings(0.010, 0.040)
    assert kernel_choice.choose_reduced_precision("lite0", other, "shape", kernel_choice.KernelPath(False, "")) is True
    assert other.calls > 0


def test_auto_precision_on_a_bf16_cpu_takes_fp32_where_bf16_measured_slower(choices, monkeypatch, lite0) -> None:
    monkeypatch.setattr("dreamcore.gradients.autocast_dtype", lambda device, precision: torch.bfloat16)
    kernel_choice.choose_reduced_precision("lite0", Timings(0.030, 0.020), "shape", NATIVE)
    kernel_choice.choose_kernel_path("lite0", Timings(0.010, 0.020), "shape")
    auto = TiledGradient(lite0, parse("block9", lite0.catalog), tile_size=64, precision="auto")
    assert auto.dtype is None and auto.kernel_path.native is True  # fp32, with the native kernels
    asked = TiledGradient(lite0, parse("block9", lite0.catalog), tile_size=64, precision="bf16")
    assert asked.dtype is torch.bfloat16  # asked for by name: never second-guessed
    kernel_choice.choose_kernel_path("vgg16", Timings(0.010, 0.020), "shape")  # both choices seeded: no timing
    kernel_choice.choose_reduced_precision("vgg16", Timings(0.010, 0.040), "shape", NATIVE)
    monkeypatch.setattr(lite0, "name", "vgg16")  # the same choice read for another network's entry
    assert TiledGradient(lite0, parse("block9", lite0.catalog), tile_size=64, precision="auto").dtype is torch.bfloat16
