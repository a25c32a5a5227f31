"""Computing an objective's gradient with respect to the image, fast and in bounded memory.

This is the speed work kept beside the render loop: the image is cut into tiles (so a 4096x4096
photo never holds more than one tile's activations), the network runs only as deep as the objective
needs, in channels-last layout and in bfloat16/float16 where the hardware does that natively, with
batch norms folded into the convolutions. ``benchmarks/reference.py`` holds the plain fp32 version
it is measured against.
"""

from __future__ import annotations

import itertools
import math
import threading

import torch
from torch import nn

from dreamcore.devices import autocast_dtype, default_tile_size, precision_context, uses_channels_last
from dreamcore.networks.base import Network
from dreamcore.objectives import Objective


def tile_edges(length: int, tile_size: int) -> list[tuple[int, int]]:
    """Split ``length`` pixels into near-equal spans of at most ``tile_size``."""
    count = max(1, math.ceil(length / tile_size))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(itertools.pairwise(edges))


class TiledGradient:
    """Loss and gradient of ``objective`` for an image (1, 3, H, W), tile by tile."""

    def __init__(
        self, network: Network, objective: Objective, *, tile_size: int | None = None, precision: str = "auto"
    ) -> None:
        self.network = prepare_for_speed(network)
        self.objective = objective
        self.tile_size = tile_size or default_tile_size(network.device)
        self.dtype = autocast_dtype(network.device, precision)
        self.channels_last = uses_channels_last(network.device)

    def __call__(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        height, width = image.shape[-2:]
        gradient = torch.empty_like(image)
        total_loss = torch.zeros((), device=image.device)
        for y0, y1 in tile_edges(height, self.tile_size):
            for x0, x1 in tile_edges(width, self.tile_size):
                tile = image[:, :, y0:y1, x0:x1].detach().clone().requires_grad_(True)
                inputs = tile.contiguous(memory_format=torch.channels_last) if self.channels_last else tile
                with precision_context(self.network.device, self.dtype):
                    loss = self.objective(self.network.activations(inputs, self.objective.layers))
                # Weighted by area, the tiles' losses add up to the whole image's (a mean over positions).
                share = (y1 - y0) * (x1 - x0) / (height * width)
                (tile_gradient,) = torch.autograd.grad(loss * share, tile)
                gradient[:, :, y0:y1, x0:x1] = tile_gradient
                total_loss += loss.detach().float() * share
        return float(total_loss), gradient  # one device sync per call, not one per tile


_prepare_lock = threading.Lock()


def prepare_for_speed(network: Network) -> Network:
    """Fold batch norms into convolutions and, on CPUs, switch to channels-last, once per network (in place).

    Both are exact rewrites of an eval-mode network; they save a pass over every activation,
    forward and backward.
    """
    with _prepare_lock:
        if getattr(network, "prepared_for_speed", False):
            return network
        fold_batch_norms(network.module)
        if uses_channels_last(network.device):
            network.module.to(memory_format=torch.channels_last)
        network.prepared_for_speed = True
        return network


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> int:
    """Fold each BatchNorm2d into the convolution declared just before it in the same parent.

    Architectures declare conv then its batch norm (``conv``/``bn`` in torchvision's BasicConv2d,
    ``_depthwise_conv``/``_bn1`` in EfficientNet), and their forward applies them back to back.
    Returns how many were folded.
    """
    folded = 0
    for parent in module.modules():
        children = list(parent.named_children())
        for (_conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training):
                continue
            if conv.out_channels != bn.num_features:
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            setattr(parent, bn_name, nn.Identity())
            folded += 1
    return folded
