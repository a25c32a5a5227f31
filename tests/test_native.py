"""The native depthwise kernels (dreamcore.native): built with the machine's compiler, same values as PyTorch."""

from __future__ import annotations

import copy
import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from tiny import frozen_random

from dreamcore import native
from dreamcore.gradients import StridedConv2d, TiledGradient, prepare_for_speed
from dreamcore.networks import Network, load_network
from dreamcore.networks.efficientnet_lite import EfficientNetLite, SameConv2d
from dreamcore.objectives import parse

needs_compiler = pytest.mark.skipif(
    native.compiler() is None or not sys.platform.startswith("linux"),
    reason="no C++ compiler here (./test.sh installs g++ on Debian)",
)


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty cache, and native_library() forgetting what it loaded, before and after the test."""
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path))
    native.native_library.cache_clear()
    yield tmp_path
    native.native_library.cache_clear()


def depthwise_conv(channels: int, kernel: int, stride: int, seed: int = 0) -> torch.nn.Conv2d:
    """A frozen depthwise convolution with a bias, as prepare_for_speed leaves lite's after folding."""
    generator = torch.Generator().manual_seed(seed)
    conv = SameConv2d(channels, channels, kernel, stride, groups=channels)
    conv.weight.data = torch.randn(conv.weight.shape, generator=generator) / kernel
    conv.bias = torch.nn.Parameter(torch.randn(channels, generator=generator))
    return conv.requires_grad_(False)


def expand_conv(channels_in: int, channels: int, seed: int = 0) -> torch.nn.Conv2d:
    """A frozen 1x1 expansion with a bias, as prepare_for_speed leaves lite's after folding."""
    generator = torch.Generator().manual_seed(seed)
    conv = SameConv2d(channels_in, channels, 1)
    conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * 2 / channels_in**0.5
    conv.bias = torch.nn.Parameter(3 + torch.randn(channels, generator=generator))
    return conv.requires_grad_(False)


def pytorch_stage(conv: torch.nn.Conv2d, x: torch.Tensor, expand: torch.nn.Conv2d | None = None) -> torch.Tensor:
    return F.relu6(conv(F.relu6(expand(x)) if expand is not None else x))


@needs_compiler
@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "size", "channels_in", "expand_natively", "batch"),
    [
        (32, 3, 1, (20, 24), None, None, 1),  # lite's block0: no expansion
        (48, 3, 2, (20, 24), 16, True, 1),  # even size: asymmetric "SAME" padding (0, 1)
        (48, 3, 2, (20, 24), 16, False, 1),  # the same with the expansion in PyTorch, its ReLU6 native
        (48, 5, 2, (21, 19), 24, True, 1),  # odd size: (2, 2); input channels past a whole vector
        (48, 5, 2, (21, 19), 24, False, 1),
        (37, 5, 1, (13, 17), None, None, 2),  # channels past the last 16-lane vector; a batch of two
        (37, 5, 1, (13, 17), 8, False, 2),
        (80, 5, 1, (13, 17), 40, True, 2),  # unstrided with expansion; a batch of two
        (16, 3, 2, (1, 9), 5, True, 1),  # a single row; fewer input channels than lanes
        (96, 3, 1, (7, 30), 112, True, 1),  # more input channels than expanded ones
    ],
)
def test_kernel_gives_pytorchs_values_and_gradients(
    channels, kernel, stride, size, channels_in, expand_natively, batch
) -> None:
    conv = depthwise_conv(channels, kernel, stride)
    expand = expand_conv(channels_in, channels) if channels_in else None
    stage = native.FusedDepthwise(conv, expand, expand_natively=expand_natively)
    assert stage.native_expansion == bool(expand_natively) and stage.relu_input == (expand_natively is False)
    generator = torch.Generator().manual_seed(1)
    # Pre-activations spread over and beyond ReLU6's range [0, 6], so both masks cut somewhere.
    x = (torch.randn(batch, channels_in or channels, *size, generator=generator) * (1 if expand else 4) + 3).contiguous(
        memory_format=torch.channels_last
    )
    grad_out = None
    results = []
    for run in (stage, lambda t: pytorch_stage(conv, t, expand)):
        pixels = x.clone().requires_grad_(True)
        y = run(pixels)
        if grad_out is None:
            grad_out = torch.randn(y.shape, generator=generator)
        (grad_x,) = torch.autograd.grad(y, pixels, grad_out)
        results.append((y, grad_x))
    (y, grad_x), (expected_y, expected_grad_x) = results
    assert y.shape == expected_y.shape and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected_y, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_x, expected_grad_x, rtol=1e-4, atol=1e-4)
    if expand is None:
        assert 0 < int((grad_x == 0).sum()) < grad_x.numel()  # the mask did cut, and not everything
    else:  # both ReLU6 masks cut somewhere, and not everywhere
        expanded = expand(x)
        assert 0 < int(((expanded > 0) & (expanded < 6)).sum()) < expanded.numel()
        assert 0 < int(((expected_y > 0) & (expected_y < 6)).sum()) < expected_y.numel()


@needs_compiler
@pytest.mark.parametrize("channels_in", [None, 24])
def test_kernel_results_do_not_depend_on_the_thread_count(channels_in) -> None:
    conv = depthwise_conv(48, 5, 2)
    expand = expand_conv(channels_in, 48) if channels_in else None
    stage = native.FusedDepthwise(conv, expand)
    x = 6 * torch.rand(1, channels_in or 48, 33, 31)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, 3):  # rows split differently; each output is still summed in one order
            torch.set_num_threads(count)
            pixels = x.clone().requires_grad_(True)
            y = stage(pixels)
            y.square().sum().backward()
            outputs.append((y, pixels.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


@needs_compiler
def test_library_is_built_once_into_the_cache_and_shares_pytorchs_openmp(fresh_build) -> None:
    assert native.native_library() is not None
    (built,) = (fresh_build / "native").glob("dreamcore-kernels-*.so")
    stamp = built.stat().st_mtime_ns
    native.native_library.cache_clear()
    assert native.native_library() is not None  # loaded from the cache, not rebuilt
    assert built.stat().st_mtime_ns == stamp and len(list((fresh_build / "native").iterdir())) == 1
    # The kernels' OpenMP threads are PyTorch's: one runtime in the process.
    assert len(native.openmp_runtimes()) == 1


def test_without_a_working_compiler_dreams_take_pytorchs_path(fresh_build, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CXX", "/bin/false")  # a compiler that fails
    with caplog.at_level(logging.WARNING, logger="dreamcore"):
        assert native.native_library() is None
    assert "slower path" in caplog.text
    conv, expand = depthwise_conv(16, 3, 2), expand_conv(8, 16)
    x = torch.rand(1, 8, 12, 14)
    torch.testing.assert_close(native.FusedDepthwise(conv, expand)(x), pytorch_stage(conv, x, expand))


def test_native_kernels_can_be_switched_off(fresh_build, monkeypatch) -> None:
    monkeypatch.setenv("DREAMCORE_NATIVE", "0")
    assert native.native_library() is None
    assert not list(fresh_build.glob("native/*"))  # nothing was built


@needs_compiler
def test_other_precisions_and_trainable_weights_take_pytorchs_path() -> None:
    conv, expand = depthwise_conv(16, 3, 1), expand_conv(8, 16)
    stage = native.FusedDepthwise(conv, expand)
    x = torch.rand(1, 8, 10, 10)
    assert stage.takes(x)
    assert not stage.takes(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not stage.takes(x)
    for trainable in (expand, conv):
        trainable.requires_grad_(True)
        assert not stage.takes(x)
        pixels = x.clone().requires_grad_(True)
        stage(pixels).sum().backward()  # the plain path keeps the weights' gradient
        assert trainable.weight.grad is not None and trainable.weight.grad.abs().sum() > 0
        trainable.requires_grad_(False)


@needs_compiler
@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "size", "pads", "batch", "layout"),
    [
        (3, 3, 2, (40, 56), (0, 1, 0, 1), 1, torch.channels_last),  # lite's stem, "SAME" on an even size
        (3, 3, 2, (37, 51), (1, 1, 1, 1), 2, torch.contiguous_format),  # odd size; a batch of two
        (3, 7, 2, (30, 34), (3, 3, 3, 3), 1, torch.channels_last),  # GoogLeNet's stem
        (1, 5, 3, (20, 33), (2, 1, 0, 2), 1, torch.contiguous_format),  # stride 3, lopsided pads
        (4, 3, 1, (9, 40), (1, 1, 1, 1), 1, torch.channels_last),  # unstrided, vectors and a tail
    ],
)
def test_overlap_add_gives_pytorchs_input_gradient(channels, kernel, stride, size, pads, batch, layout) -> None:
    generator = torch.Generator().manual_seed(1)
    left, right, top, bottom = pads
    height, width = size
    weight = torch.randn(8, channels, kernel, kernel, generator=generator)
    padded = torch.zeros(batch, channels, top + height + bottom, left + width + right, requires_grad=True)
    out = F.conv2d(padded, weight, None, stride)
    grad = torch.randn(out.shape, generator=generator).contiguous(memory_format=layout)
    (expected,) = torch.autograd.grad(out, padded, grad)
    got = native.overlap_add_input_gradient(grad, weight, size, pads, (stride, stride))
    torch.testing.assert_close(got, expected[:, :, top : top + height, left : left + width], rtol=1e-5, atol=1e-5)


@needs_compiler
def test_strided_stem_backward_takes_the_overlap_add_and_falls_back_without_it(monkeypatch) -> None:
    conv = SameConv2d(3, 16, 3, stride=2).requires_grad_(False)
    torch.nn.init.normal_(conv.weight)
    stem = StridedConv2d(conv)
    image = torch.rand(1, 3, 33, 48, generator=torch.Generator().manual_seed(2))
    grad = torch.randn(1, 16, 17, 24, generator=torch.Generator().manual_seed(3))
    calls = []
    original = native.overlap_add_input_gradient

    def counting(*args):
        calls.append(1)
        return original(*args)

    results = []
    for library in (native.native_library, lambda: None):
        monkeypatch.setattr(native, "native_library", library)
        monkeypatch.setattr("dreamcore.gradients.overlap_add_input_gradient", counting)
        pixels = image.clone().requires_grad_(True)
        (result,) = torch.autograd.grad(stem(pixels), pixels, grad)
        results.append(result)
    assert len(calls) == 2  # asked both times; the second had no library and PyTorch's path ran
    pixels = image.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(conv(pixels), pixels, grad)
    for result in results:
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_prepared_lite_networks_use_the_fused_step_with_the_same_gradient() -> None:
    module = frozen_random(EfficientNetLite, "lite0")
    plain_blocks = copy.deepcopy(module)

    def network_of(m: torch.nn.Module) -> Network:
        return Network("lite0", m, m.stages(), [str(i) for i in range(1000)], (0.5,) * 3, (0.5,) * 3, 224)

    fast, plain = network_of(module), network_of(plain_blocks)
    prepare_for_speed(fast)
    stages = [b.__dict__.get("expand_and_depthwise") for b in module._blocks]
    assert all(isinstance(s, native.FusedDepthwise) for s in stages)
    # Expansions whose weight fits a core's L1 cache (blocks 1 to 3) run inside the native pass.
    assert [s.native_expansion for s in stages[:6]] == [False, True, True, True, False, False]
    assert [s.relu_input for s in stages[:6]] == [False, False, False, False, True, True]
    assert native.use_fused_depthwise(module) == 0  # idempotent
    assert native.use_fused_depthwise(plain_blocks) == 0  # batch norms not folded: left alone

    calls = []
    original = native._FusedDepthwiseFunction.forward

    def counting(ctx, *args):
        calls.append(1)
        return original(ctx, *args)

    image = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    gradients = []
    for network in (plain, fast):
        pixels = image.clone().requires_grad_(True)
        inputs = pixels.contiguous(memory_format=torch.channels_last) if network is fast else pixels
        if network is fast:
            native._FusedDepthwiseFunction.forward = staticmethod(counting)
        try:
            network.activations(inputs, ["block9"])["block9"].square().mean().backward()
        finally:
            native._FusedDepthwiseFunction.forward = staticmethod(original)
        gradients.append(pixels.grad)
    assert len(calls) == 10  # blocks 0 to 9 ran natively
    scale = gradients[0].abs().max()
    torch.testing.assert_close(gradients[1] / scale, gradients[0] / scale, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_real_weights_dream_gradient_matches_pytorchs(monkeypatch) -> None:
    """The packaged lite0 at a realistic tile: the native and PyTorch paths agree."""
    monkeypatch.setenv("DREAMCORE_NATIVE", "1")  # whichever is faster here, compare the native path
    network = load_network("lite0", "cpu")
    gradient = TiledGradient(network, parse("block9", network.catalog), tile_size=512, precision="fp32")
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(5))
    image = F.interpolate(image, size=(192, 256), mode="bilinear")
    loss, fast = gradient(image)
    monkeypatch.setattr(native, "native_library", lambda: None)
    plain_loss, plain = gradient(image)
    assert math.isclose(loss, plain_loss, rel_tol=1e-5)
    cosine = F.cosine_similarity(fast.flatten(), plain.flatten(), dim=0)
    assert float(cosine) > 0.9999
