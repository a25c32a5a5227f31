"""The classic networks' speed rewrites are exact: activations and the image's gradient as before."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import frozen_random
from torch import nn

from dreamcore.classic_rewrites import StackedPointwise, stack_inception_pointwise
from dreamcore.gradients import fold_batch_norms, prepare_for_speed
from dreamcore.networks import Network
from dreamcore.networks.base import LayerInfo, Stage
from dreamcore.networks.googlenet import GoogLeNet, Inception
from dreamcore.networks.inception_v3 import InceptionA, InceptionC, InceptionD, InceptionE, InceptionV3


def block_network(block: nn.Module) -> Network:
    """One Inception block as a network whose only layer is its output."""
    module = nn.Sequential(block)
    stages = [Stage(LayerInfo("block", block.channels_out, 1), block)]
    return Network("block", module, stages, [], (0.0,) * 3, (1.0,) * 3, 16)


def input_and_gradient(run, image: torch.Tensor, channels_last: bool):
    """``run``'s output and the gradient of a random weighting of it (not just its square)."""
    pixels = image.clone().requires_grad_(True)
    inputs = pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels
    found = run(inputs)
    weights = torch.rand(found.shape, generator=torch.Generator().manual_seed(1))
    (gradient,) = torch.autograd.grad((found * weights).sum(), pixels)
    return found.detach(), gradient


BLOCKS = {
    "googlenet": (lambda: Inception(12, 8, 6, 10, 4, 6, 5), 12),
    "inception_a": (lambda: InceptionA(12, pool_features=8), 12),
    "inception_c": (lambda: InceptionC(16, channels_7x7=8), 16),
    "inception_d": (lambda: InceptionD(16), 16),
    "inception_e": (lambda: InceptionE(16), 16),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_stacked_blocks_give_the_same_activations_and_gradient(kind, channels_last) -> None:
    make, channels_in = BLOCKS[kind]
    plain = block_network(frozen_random(lambda: make()))
    fast = copy.deepcopy(plain)
    fold_batch_norms(fast.module)
    assert stack_inception_pointwise(fast) == 1
    assert any(isinstance(m, StackedPointwise) for m in fast.module.modules())
    assert fast.stages[0].run is not plain.stages[0].run  # the stage runs the rewritten block
    if channels_last:
        fast.module.to(memory_format=torch.channels_last)
    # 11x13: odd sizes, so Inception v3's unpadded strided reductions drop a row and a column.
    image = torch.randn(1, channels_in, 11, 13, generator=torch.Generator().manual_seed(0))
    expected, expected_gradient = input_and_gradient(plain.stages[0].run, image, False)
    found, gradient = input_and_gradient(fast.stages[0].run, image, channels_last)
    assert (expected > 0).float().mean() > 0.2  # a real test: most units are not rectified to zero
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-4, atol=1e-4)


def test_stacked_blocks_stay_in_the_autocast_precision() -> None:
    make, channels_in = BLOCKS["inception_a"]
    network = block_network(frozen_random(lambda: make()))
    fold_batch_norms(network.module)
    stack_inception_pointwise(network)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = network.stages[0].run(torch.rand(1, channels_in, 9, 9))
    assert out.dtype == torch.bfloat16  # an fp32 bias would have promoted the pool branch


def random_network(cls: type[nn.Module]) -> Network:
    module = frozen_random(cls)
    return Network(cls.__name__, module, module.stages(), [str(i) for i in range(1000)], (0.5,) * 3, (0.5,) * 3, 224)


@pytest.mark.parametrize(
    ("cls", "layer", "size", "blocks"),
    [(GoogLeNet, "inception_5b", (64, 72), 9), (InceptionV3, "mixed_7c", (83, 90), 10)],
    ids=["googlenet", "inception_v3"],
)
def test_prepared_networks_run_every_block_stacked_with_the_same_gradient(cls, layer, size, blocks) -> None:
    plain = random_network(cls)
    fast = prepare_for_speed(copy.deepcopy(plain))
    stacked = [m for m in fast.module.modules() if isinstance(m, StackedPointwise)]
    assert len(stacked) == blocks  # every block but Inception v3's 6a (no two 1x1 convolutions on its input)
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    expected, expected_gradient = input_and_gradient(lambda x: plain.activations(x, [layer])[layer], image, False)
    found, gradient = input_and_gradient(lambda x: fast.activations(x, [layer])[layer], image, True)
    scale = expected_gradient.abs().max()
    assert scale > 0
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gradient / scale, expected_gradient / scale, rtol=1e-4, atol=1e-5)


def test_the_rewrites_can_be_turned_off_for_comparison(monkeypatch) -> None:
    monkeypatch.setenv("DREAMCORE_CLASSIC_REWRITES", "0")
    fast = prepare_for_speed(random_network(GoogLeNet))
    assert not any(isinstance(m, StackedPointwise) for m in fast.module.modules())
