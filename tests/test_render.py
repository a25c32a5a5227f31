"""The render loop and the gradient machinery, on a tiny random network (fast)."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys

import pytest
import torch
from tiny import frozen_random, tiny_network

from dreamcore.errors import Cancelled, UsageError
from dreamcore.gradients import (
    StridedConv2d,
    TiledGradient,
    fold_batch_norms,
    prepare_for_speed,
    tile_grid,
    use_strided_conv2d,
    zero_padded,
)
from dreamcore.networks import Network
from dreamcore.networks.efficientnet_lite import EfficientNetLite
from dreamcore.networks.googlenet import GoogLeNet
from dreamcore.networks.inception_v3 import InceptionV3
from dreamcore.objectives import layer, parse
from dreamcore.render import deep_dream, octave_shapes


def noise_image(height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=generator)


def test_octave_shapes_run_from_small_to_the_original_size() -> None:
    shapes = octave_shapes(300, 451, octaves=3, scale=1.5)
    assert shapes == [(133, 200), (200, 301), (300, 451)]
    assert octave_shapes(10, 10, 1, 1.4) == [(10, 10)]


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [
        (100, 100, 512),
        (512, 512, 512),
        (513, 512, 512),
        (768, 1024, 512),
        (548, 731, 512),
        (4096, 4096, 500),
        (3000, 90, 512),
        (90, 3000, 512),
        (1, 1, 64),
    ],
)
def test_tiles_cover_every_pixel_once_and_bound_area_and_sides(height: int, width: int, tile: int) -> None:
    row_spans, column_spans = tile_grid(height, width, tile)
    for spans_, length in ((row_spans, height), (column_spans, width)):
        assert spans_[0][0] == 0 and spans_[-1][1] == length
        assert all(a1 == b0 for (_, a1), (b0, _) in itertools.pairwise(spans_))
        assert all(0 < end - start <= 2 * tile for start, end in spans_)
    assert max(y1 - y0 for y0, y1 in row_spans) * max(x1 - x0 for x0, x1 in column_spans) <= tile * tile


@pytest.mark.parametrize(
    ("height", "width", "grid"),
    [(391, 522, (1, 1)), (548, 731, (1, 2)), (731, 548, (2, 1)), (1024, 1024, (2, 2)), (4096, 4096, (8, 8))],
)
def test_tiles_are_as_few_as_the_area_allows_and_the_squarest_of_those(
    height: int, width: int, grid: tuple[int, int]
) -> None:
    # 548x731 fits two 548x366 tiles (200k pixels each): not four 274x366 ones, nor two 274x731 ones.
    row_spans, column_spans = tile_grid(height, width, 512)
    assert (len(row_spans), len(column_spans)) == grid


@pytest.mark.parametrize(("layer_name", "jitter"), [("first", 8), ("second", 0)])
def test_dream_raises_the_objective_and_keeps_size_and_range(layer_name: str, jitter: int) -> None:
    # (A random stride-2 layer likes near-Nyquist patterns whose phase odd shifts flip, so it dreams unjittered.)
    network = tiny_network()
    objective = layer(layer_name)
    image = 0.4 + 0.2 * noise_image()  # away from the clamp at 0 and 1
    before = float(objective(network.activations(image, objective.layers)))
    gradient = TiledGradient(network, objective, precision="fp32")
    result = deep_dream(image, gradient, octaves=2, iterations=10, step=0.05, jitter=jitter, seed=1)
    after = float(objective(network.activations(result, objective.layers)))
    assert result.shape == image.shape
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0
    assert after > 1.5 * before


def test_a_seed_makes_a_run_repeatable() -> None:
    network = tiny_network()
    gradient = TiledGradient(network, layer("first"), precision="fp32")
    image = noise_image()
    first = deep_dream(image, gradient, octaves=2, iterations=3, seed=7)
    again = deep_dream(image, gradient, octaves=2, iterations=3, seed=7)
    other = deep_dream(image, gradient, octaves=2, iterations=3, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_progress_reports_every_step_and_cancellation_stops_the_render() -> None:
    network = tiny_network()
    steps = []
    with pytest.raises(Cancelled):
        deep_dream(
            noise_image(),
            TiledGradient(network, layer("first"), precision="fp32"),
            octaves=3,
            iterations=4,
            on_step=steps.append,
            should_stop=lambda: len(steps) >= 6,
        )
    assert [(s.octave, s.iteration) for s in steps] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2)]
    assert steps[-1].fraction == pytest.approx(6 / 12)
    assert all(s.octaves == 3 and s.iterations == 4 for s in steps)


def test_max_loss_ends_each_octave_early() -> None:
    network = tiny_network()
    steps = []
    deep_dream(
        noise_image(),
        TiledGradient(network, layer("first")),
        octaves=3,
        iterations=5,
        max_loss=0.0,
        on_step=steps.append,
    )
    assert [(s.octave, s.iteration) for s in steps] == [(1, 1), (2, 1), (3, 1)]


def test_tiled_gradient_equals_the_whole_image_gradient_for_a_pointwise_network() -> None:
    # With 1x1 convolutions no pixel sees its neighbours, so tiling must not change the gradient at all.
    network = tiny_network(kernel=1)
    objective = layer("first")
    image = noise_image(70, 90)
    whole_loss, whole = TiledGradient(network, objective, tile_size=4096, precision="fp32")(image)
    tiled_loss, tiled = TiledGradient(network, objective, tile_size=64, precision="fp32")(image)
    assert torch.allclose(whole, tiled, atol=1e-6)
    assert tiled_loss == pytest.approx(whole_loss, rel=1e-4)


def test_the_forward_pass_stops_at_the_deepest_layer_needed() -> None:
    network = tiny_network()
    network.module.runs.clear()
    network.activations(noise_image(), ["one"])  # an alias of "first"
    assert network.module.runs == ["first"]
    network.module.runs.clear()
    acts = network.activations(noise_image(), ["second", "first"])
    assert network.module.runs == ["first", "second"]
    assert set(acts) == {"first", "second"}


def test_folding_batch_norms_keeps_the_network_function() -> None:
    network = tiny_network()
    image = noise_image()
    expected = network.module(network.preprocess(image))
    folded = copy.deepcopy(network)
    assert fold_batch_norms(folded.module) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.module.modules())
    assert torch.allclose(folded.module(folded.preprocess(image)), expected, atol=1e-5)


def test_preparing_twice_is_harmless() -> None:
    network = tiny_network()
    image = noise_image()
    expected = network.module(network.preprocess(image))
    prepare_for_speed(prepare_for_speed(network))
    assert torch.allclose(network.module(network.preprocess(image)), expected, atol=1e-5)


def random_network(cls: type[torch.nn.Module], *args: object) -> Network:
    module = frozen_random(cls, *args)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return Network(cls.__name__, module, module.stages(), [str(i) for i in range(1000)], mean, std, 224)


@pytest.mark.parametrize(
    ("cls", "args", "layer_name", "sizes"),
    [
        # Odd and even sizes: "SAME" padding of lite's strided convolutions is asymmetric for even ones.
        (EfficientNetLite, ("lite0",), "block9", [(64, 96), (77, 51)]),
        (GoogLeNet, (), "inception_3b", [(64, 72)]),  # symmetric padding
        (InceptionV3, (), "mixed_6a", [(83, 90)]),  # no padding, strided blocks inside
    ],
    ids=["lite0", "googlenet", "inception_v3"],
)
def test_the_speed_rewrites_keep_the_image_gradient(cls, args, layer_name, sizes) -> None:
    plain = random_network(cls, *args)
    fast = copy.deepcopy(plain)
    prepare_for_speed(fast)
    wrapped = [m for m in fast.module.modules() if isinstance(m, StridedConv2d)]
    assert wrapped, "the strided convolutions were not rewritten"
    for height, width in sizes:
        image = noise_image(height, width)
        gradients = []
        for network in (plain, fast):
            pixels = image.clone().requires_grad_(True)
            inputs = pixels.contiguous(memory_format=torch.channels_last) if network is fast else pixels
            network.activations(inputs, [layer_name])[layer_name].square().mean().backward()
            gradients.append(pixels.grad)
        scale = gradients[0].abs().max()  # deep random layers give tiny gradients: compare at their scale
        assert scale > 0
        torch.testing.assert_close(gradients[1] / scale, gradients[0] / scale, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # without gradients the plain convolution runs, with the same output
        image = noise_image(*sizes[0])
        torch.testing.assert_close(
            fast.activations(image, [layer_name])[layer_name],
            plain.activations(image, [layer_name])[layer_name],
            rtol=1e-4,
            atol=1e-5,
        )


def test_strided_conv2d_under_autocast_and_with_trainable_weights() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1).requires_grad_(False)
    model = torch.nn.Sequential(conv)
    assert use_strided_conv2d(model) == 1 and use_strided_conv2d(model) == 0  # idempotent
    x = torch.rand(1, 4, 15, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32
    exact = torch.autograd.grad(conv(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, exact, rtol=0.05, atol=0.05)
    # Trainable weights take the plain path, so their gradient is not lost.
    conv.requires_grad_(True)
    model(torch.rand(1, 4, 15, 16, requires_grad=True)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_padded_is_f_pad(channels_last: bool) -> None:
    x = torch.rand(2, 5, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for pads in [(0, 1, 0, 1), (1, 2, 1, 2), (0, 0, 3, 0), (2, 0, 0, 0)]:
        padded = zero_padded(x, pads)
        assert torch.equal(padded, torch.nn.functional.pad(x, pads))
        assert padded.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_bf16_gradient_points_the_same_way_as_fp32() -> None:
    network = tiny_network()
    objective = parse("second", network.catalog)
    image = noise_image(64, 64)
    _, exact = TiledGradient(network, objective, precision="fp32")(image)
    _, reduced = TiledGradient(network, objective, precision="bf16")(image)
    cosine = torch.nn.functional.cosine_similarity(exact.flatten(), reduced.flatten(), dim=0)
    assert reduced.dtype == torch.float32
    assert float(cosine) > 0.95


def test_precision_choice(monkeypatch) -> None:
    from dreamcore import devices

    cpu = torch.device("cpu")
    assert devices.autocast_dtype(cpu, "fp32") is None
    assert devices.autocast_dtype(cpu, "bf16") is torch.bfloat16
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert devices.autocast_dtype(cpu, "auto") is None  # measured: does not pay without AMX
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512_bf16", "amx_bf16", "amx_tile"})
    assert devices.autocast_dtype(cpu, "auto") is torch.bfloat16
    with pytest.raises(UsageError, match="precision"):
        devices.autocast_dtype(cpu, "fp8")


ALLOCATION_PROBE = """
import resource, sys, torch
from dreamcore import gradients
from dreamcore.networks import load_network
from dreamcore.objectives import parse
if sys.argv[1] == "plain":
    gradients.keep_tile_buffers_in_heap = lambda: False
network = load_network("lite0", "cpu")
gradient = gradients.TiledGradient(network, parse("block5", network.catalog), tile_size=512)
image = torch.rand(1, 3, 768, 1024)
gradient(image)
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    gradient(image)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[1])  # the median: the heap may still grow once
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_tile_buffers_are_reused_instead_of_mapped_afresh_each_time() -> None:
    def page_faults(mode: str) -> int:
        # PyTorch's own operators, which allocate a buffer per step (the native kernels allocate fewer).
        env = os.environ | {"DREAMCORE_NATIVE": "0"}
        result = subprocess.run(
            [sys.executable, "-c", ALLOCATION_PROBE, mode], capture_output=True, text=True, check=True, env=env
        )
        return int(result.stdout.split()[-1])

    # By default glibc gives the tiles' activations fresh pages again and again (tens of thousands of
    # page faults per gradient); once prepared, the network's tiles reuse the heap.
    assert page_faults("plain") > 10_000
    assert page_faults("tuned") < 5_000


def test_a_users_own_glibc_settings_win(monkeypatch) -> None:
    from dreamcore import devices

    devices.keep_tile_buffers_in_heap.cache_clear()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    try:
        assert devices.keep_tile_buffers_in_heap() is False
    finally:
        devices.keep_tile_buffers_in_heap.cache_clear()
