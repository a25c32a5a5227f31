"""Exact rewrites of the classic Inception networks for dreaming, beside the render loop (issue 18).

An Inception block runs several 1x1 convolutions on the same input: GoogLeNet's first branch and
the reductions before its two 3x3 branches, Inception v3's 1x1 branch and its reductions. They are
one matrix product with the weights stacked, so they run here as one wider convolution whose
output is split (views, no copy), and the backward pass computes the input's gradient once, in one
product, instead of three products and two additions of input-sized gradients. Inception v3's
average-pool branch is linear up to its ReLU (a 3x3 average, then a 1x1 convolution), so its
convolution joins the stack too and the pool runs on its 32 to 192 output channels instead of the
block's 192 to 2048 input channels.

Each rewrite is exact up to float rounding (tests/test_classic_speed.py) and runs after batch norms
are folded (:func:`dreamcore.gradients.fold_batch_norms`). ``DREAMCORE_CLASSIC_REWRITES=0`` leaves the
networks as they are, for comparison.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.networks import googlenet, inception_v3
from dreamcore.networks.base import Network, Stage


def rewrites_enabled() -> bool:
    return os.environ.get("DREAMCORE_CLASSIC_REWRITES", "1").strip() != "0"


class StackedPointwise(nn.Module):
    """Several folded 1x1 ``BasicConv2d`` on one input as one convolution; returns their outputs as views.

    With ``pooled_last`` the last one is an Inception v3 pool projection, ``conv1x1(avg_pool3x3(x))``:
    its product joins the stack without its bias, then is averaged, biased and rectified on its own.
    """

    def __init__(self, convs: list[nn.Module], pooled_last: bool = False) -> None:
        super().__init__()
        weights = [basic.conv.weight for basic in convs]
        biases = [basic.conv.bias for basic in convs]
        self.weight = nn.Parameter(torch.cat(weights), requires_grad=False)
        self.bias = nn.Parameter(torch.cat(biases[:-1] if pooled_last else biases), requires_grad=False)
        self.pool_bias = nn.Parameter(biases[-1].clone(), requires_grad=False) if pooled_last else None
        self.splits = [w.shape[0] for w in weights]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pool_bias is None:
            return list(F.relu(F.conv2d(x, self.weight, self.bias), inplace=True).split(self.splits, 1))
        plain = sum(self.splits[:-1])
        stacked = F.conv2d(x, self.weight)
        # Biases in the product's dtype: under autocast an fp32 bias would promote the branches to fp32.
        direct = F.relu(stacked[:, :plain] + self.bias.to(stacked.dtype).view(1, -1, 1, 1), inplace=True)
        pooled = F.avg_pool2d(stacked[:, plain:], kernel_size=3, stride=1, padding=1)
        pooled = F.relu(pooled + self.pool_bias.to(pooled.dtype).view(1, -1, 1, 1), inplace=True)
        return [*direct.split(self.splits[:-1], 1), pooled]


class FusedInception(nn.Module):
    """GoogLeNet's Inception block with its three 1x1 convolutions on the input stacked."""

    def __init__(self, block: googlenet.Inception) -> None:
        super().__init__()
        self.stacked = StackedPointwise([block.branch1, block.branch2[0], block.branch3[0]])
        self.branch2, self.branch3, self.branch4 = block.branch2[1], block.branch3[1], block.branch4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1, reduced2, reduced3 = self.stacked(x)
        return torch.cat([branch1, self.branch2(reduced2), self.branch3(reduced3), self.branch4(x)], 1)


class FusedInceptionA(nn.Module):
    def __init__(self, block: inception_v3.InceptionA) -> None:
        super().__init__()
        self.stacked = StackedPointwise(
            [block.branch1x1, block.branch5x5_1, block.branch3x3dbl_1, block.branch_pool], pooled_last=True
        )
        self.branch5x5_2 = block.branch5x5_2
        self.branch3x3dbl_2, self.branch3x3dbl_3 = block.branch3x3dbl_2, block.branch3x3dbl_3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1, reduced5x5, reduced3x3dbl, branch_pool = self.stacked(x)
        branch5x5 = self.branch5x5_2(reduced5x5)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(reduced3x3dbl))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class FusedInceptionC(nn.Module):
    def __init__(self, block: inception_v3.InceptionC) -> None:
        super().__init__()
        self.stacked = StackedPointwise(
            [block.branch1x1, block.branch7x7_1, block.branch7x7dbl_1, block.branch_pool], pooled_last=True
        )
        self.branch7x7 = nn.Sequential(block.branch7x7_2, block.branch7x7_3)
        self.branch7x7dbl = nn.Sequential(
            block.branch7x7dbl_2, block.branch7x7dbl_3, block.branch7x7dbl_4, block.branch7x7dbl_5
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1, reduced7x7, reduced7x7dbl, branch_pool = self.stacked(x)
        return torch.cat([branch1x1, self.branch7x7(reduced7x7), self.branch7x7dbl(reduced7x7dbl), branch_pool], 1)


class FusedInceptionD(nn.Module):
    def __init__(self, block: inception_v3.InceptionD) -> None:
        super().__init__()
        self.stacked = StackedPointwise([block.branch3x3_1, block.branch7x7x3_1])
        self.branch3x3_2 = block.branch3x3_2
        self.branch7x7x3 = nn.Sequential(block.branch7x7x3_2, block.branch7x7x3_3, block.branch7x7x3_4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced3x3, reduced7x7x3 = self.stacked(x)
        pooled = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3_2(reduced3x3), self.branch7x7x3(reduced7x7x3), pooled], 1)


class FusedInceptionE(nn.Module):
    def __init__(self, block: inception_v3.InceptionE) -> None:
        super().__init__()
        self.stacked = StackedPointwise(
            [block.branch1x1, block.branch3x3_1, block.branch3x3dbl_1, block.branch_pool], pooled_last=True
        )
        self.branch3x3_2a, self.branch3x3_2b = block.branch3x3_2a, block.branch3x3_2b
        self.branch3x3dbl_2 = block.branch3x3dbl_2
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = block.branch3x3dbl_3a, block.branch3x3dbl_3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1, reduced3x3, reduced3x3dbl, branch_pool = self.stacked(x)
        branch3x3 = torch.cat([self.branch3x3_2a(reduced3x3), self.branch3x3_2b(reduced3x3)], 1)
        reduced3x3dbl = self.branch3x3dbl_2(reduced3x3dbl)
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(reduced3x3dbl), self.branch3x3dbl_3b(reduced3x3dbl)], 1)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


_FUSED = {
    googlenet.Inception: FusedInception,
    inception_v3.InceptionA: FusedInceptionA,
    inception_v3.InceptionC: FusedInceptionC,
    inception_v3.InceptionD: FusedInceptionD,
    inception_v3.InceptionE: FusedInceptionE,
}


def _folded(block: nn.Module) -> bool:
    """Whether every BasicConv2d in ``block`` has its batch norm folded into a plain convolution with a bias."""
    return all(
        isinstance(basic.bn, nn.Identity) and isinstance(basic.conv, nn.Conv2d) and basic.conv.bias is not None
        for basic in block.modules()
        if isinstance(basic, googlenet.BasicConv2d)
    )


def stack_inception_pointwise(network: Network) -> int:
    """Replace each Inception block whose 1x1 convolutions are folded with its stacked version, in the
    module and in the network's stages (which hold the blocks themselves); returns how many."""
    if not rewrites_enabled():
        return 0
    replaced: dict[int, nn.Module] = {}
    for parent in list(network.module.modules()):
        for name, child in list(parent.named_children()):
            fused_type = _FUSED.get(type(child))
            if fused_type is None:
                continue
            if not _folded(child):
                continue
            fused = fused_type(child)
            setattr(parent, name, fused)
            replaced[id(child)] = fused
    network.stages = [Stage(stage.info, replaced.get(id(stage.run), stage.run)) for stage in network.stages]
    return len(replaced)
