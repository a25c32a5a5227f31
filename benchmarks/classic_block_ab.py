"""Inception blocks, stacked 1x1 convolutions against the plain ones, in one process, taking turns.

    python benchmarks/classic_block_ab.py

The whole-dream benchmark (classic_speed.py) cannot resolve a few per cent on a shared 2-core
machine; this times GoogLeNet's inception_4c block (a 512x768 tile's 32x48 grid) and Inception v3's
mixed_5d (a 384x512 tile's 48x64 grid) alone, forward and input gradient, channels-last, in CPU
time, alternating, and prints the median of the pairs' ratios.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from dreamcore.classic_rewrites import stack_inception_pointwise
from dreamcore.gradients import fold_batch_norms
from dreamcore.networks.base import LayerInfo, Network, Stage
from dreamcore.networks.googlenet import Inception
from dreamcore.networks.inception_v3 import InceptionA

BLOCKS = {
    "googlenet inception_4c": (lambda: Inception(512, 128, 128, 256, 24, 64, 64), (512, 32, 48)),
    "inception_v3 mixed_5d": (lambda: InceptionA(288, pool_features=64), (288, 48, 64)),
}


def block_network(make) -> Network:
    torch.manual_seed(0)
    block = make().eval().requires_grad_(False)
    for child in block.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.running_var.uniform_(0.5, 2.0)
    stages = [Stage(LayerInfo("block", block.channels_out, 1), block)]
    network = Network("block", nn.Sequential(block), stages, [], (0.0,) * 3, (1.0,) * 3, 16)
    fold_batch_norms(network.module)
    return network


def main(pairs: int = 15) -> None:
    torch.set_num_threads(2)
    for name, (make, shape) in BLOCKS.items():
        compare(name, make, shape, pairs)


def compare(name: str, make, shape: tuple[int, int, int], pairs: int) -> None:
    plain = block_network(make)
    stacked = copy.deepcopy(plain)
    stack_inception_pointwise(stacked)
    for network in (plain, stacked):
        network.module.to(memory_format=torch.channels_last)
    x = torch.randn(1, *shape).contiguous(memory_format=torch.channels_last)

    def cpu_seconds(network: Network, dtype: torch.dtype | None) -> float:
        started = time.process_time()
        for _ in range(2):
            pixels = x.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = network.stages[0].run(pixels)
            torch.autograd.grad(out.float().square().mean(), pixels)
        return time.process_time() - started

    for dtype in (torch.bfloat16, None):
        for network in (plain, stacked):
            cpu_seconds(network, dtype)
        ratios = []
        for i in range(pairs):
            first, second = (plain, stacked) if i % 2 == 0 else (stacked, plain)
            times = {id(first): cpu_seconds(first, dtype), id(second): cpu_seconds(second, dtype)}
            ratios.append(times[id(plain)] / times[id(stacked)])
        print(
            f"{name}, {dtype or 'fp32'}: plain / stacked CPU time, "
            f"median of {pairs} pairs {statistics.median(ratios):.3f}x "
            f"(range {min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
