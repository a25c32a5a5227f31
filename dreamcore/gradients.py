"""Computing an objective's gradient with respect to the image, fast and in bounded memory.

This is the speed work kept beside the render loop: the image is cut into tiles (so a 4096x4096
photo never holds more than one tile's activations), the network runs only as deep as the objective
needs, in channels-last layout and in bfloat16/float16 where the hardware does that natively, with
batch norms folded into the convolutions and, on CPUs, strided convolutions that compute only the
image's gradient and EfficientNet-Lite's expansion and depthwise steps in one native pass (``dreamcore.native``).
``benchmarks/reference.py`` holds the plain fp32 version it is measured against.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.classic_rewrites import stack_inception_pointwise
from dreamcore.devices import (
    autocast_dtype,
    default_tile_size,
    keep_tile_buffers_in_heap,
    precision_context,
    uses_channels_last,
)
from dreamcore.kernel_choice import KernelPath, choose_kernel_path, choose_reduced_precision
from dreamcore.native import FusedDepthwise, overlap_add_input_gradient, use_fused_depthwise
from dreamcore.networks.base import Network, zero_padding
from dreamcore.objectives import Objective


def tile_grid(height: int, width: int, tile_size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row and column spans that split an image into the fewest near-equal tiles of at most
    ``tile_size`` squared pixels, neither side over twice ``tile_size``; of as many, the squarest.

    Area bounds a tile's memory, and the fewer the tiles, the less per-tile overhead and the longer
    the rows the kernels stream: a 731x548 octave takes two 366x548 tiles rather than four, a
    522x391 one a single tile (lite0 on 2 cores: 236 against 255, and 241 against 283 ms per
    megapixel).
    """
    area, longest = tile_size * tile_size, 2 * tile_size
    best: tuple[tuple[int, float], int, int] | None = None
    for rows in range(math.ceil(height / longest), height + 1):
        if best is not None and rows > best[0][0]:
            break  # more rows alone than the best grid has tiles
        tile_height = math.ceil(height / rows)
        columns = max(math.ceil(width / longest), math.ceil(width / max(1, area // tile_height)))
        while tile_height * math.ceil(width / columns) > area:  # spans rounded up past the area
            columns += 1
        tile_width = math.ceil(width / columns)
        score = (rows * columns, max(tile_height / tile_width, tile_width / tile_height))
        if best is None or score < best[0]:
            best = (score, rows, columns)
    _, rows, columns = best
    return spans(height, rows), spans(width, columns)


def spans(length: int, count: int) -> list[tuple[int, int]]:
    """Split ``length`` pixels into ``count`` near-equal spans."""
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
        if precision == "auto" and self.dtype is not None and network.device.type == "cpu":
            self.dtype = faster_precision(self.network, objective.layers, self.dtype, self.tile_size)
        self.kernel_path = kernel_path_for(self.network, objective.layers, self.dtype, self.tile_size)

    def __call__(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        height, width = image.shape[-2:]
        gradient = torch.empty_like(image)
        total_loss = torch.zeros((), device=image.device)
        row_spans, column_spans = tile_grid(height, width, self.tile_size)
        for y0, y1 in row_spans:
            for x0, x1 in column_spans:
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


def kernel_path_for(network: Network, layers: Collection[str], dtype: torch.dtype | None, tile_size: int) -> KernelPath:
    """Choose, and switch the network to, the faster CPU path for it (:mod:`dreamcore.kernel_choice`)."""
    if network.device.type != "cpu":
        return KernelPath(False, f"dreaming on {network.device.type}")
    if dtype is not None:
        precision = str(dtype).removeprefix("torch.")
        return KernelPath(False, f"the native kernels are for fp32; this dream runs in {precision}")
    stages = native_stages(network.module)
    if not stages or not layers:
        return KernelPath(False, f"{network.name} has no layers the native kernels speed up")
    gradient, shape = probe_gradient(network, layers, tile_size)

    def time_gradient(use_native: bool) -> float:
        for stage in stages:
            stage.use_native = use_native
        return gradient()

    choice = choose_kernel_path(network.name, time_gradient, shape)
    for stage in stages:
        stage.use_native = choice.native
    return choice


def probe_gradient(network: Network, layers: Collection[str], tile_size: int) -> tuple[Callable[[], float], str]:
    """What the choices time: one gradient of ``layers`` on a fixed square tile (at most 384 px), and its
    description for people."""
    side = min(tile_size, 384)
    probe = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    probe = probe.contiguous(memory_format=torch.channels_last)

    def seconds() -> float:
        pixels = probe.clone().requires_grad_(True)
        started = time.perf_counter()
        found = network.activations(pixels, layers)
        torch.autograd.grad(sum(a.float().square().mean() for a in found.values()), pixels)
        return time.perf_counter() - started

    return seconds, f"{side}x{side} gradient to {max(layers, key=network.catalog.depth)}"


def faster_precision(
    network: Network, layers: Collection[str], reduced: torch.dtype, tile_size: int
) -> torch.dtype | None:
    """``reduced`` where it measured faster than fp32 for this network on this CPU, else None (fp32)."""
    if not layers:
        return reduced
    fp32_path = kernel_path_for(network, layers, None, tile_size)  # fp32 at its best: the faster CPU path
    gradient, shape = probe_gradient(network, layers, tile_size)

    def time_gradient(use_reduced: bool) -> float:
        with precision_context(network.device, reduced if use_reduced else None):
            return gradient()

    faster = choose_reduced_precision(network.name, time_gradient, shape, fp32_path)
    return reduced if faster else None


_prepare_lock = threading.Lock()


def prepare_for_speed(network: Network) -> Network:
    """Rewrite a network for dreaming, once per network (in place); each rewrite is exact.

    Batch norms are folded into convolutions (a pass over every activation saved, forward and
    backward), and the Inception blocks' 1x1 convolutions on one input run as one
    (:mod:`dreamcore.classic_rewrites`). On CPUs the network goes channels-last,
    EfficientNet-Lite's expansion and depthwise steps run as one native pass each
    (:mod:`dreamcore.native`; exact up to float rounding), its other strided
    convolutions become :class:`StridedConv2d`, and the allocator keeps tile buffers
    (:func:`keep_tile_buffers_in_heap`).
    """
    with _prepare_lock:
        if getattr(network, "prepared_for_speed", False):
            return network
        fold_batch_norms(network.module)
        stack_inception_pointwise(network)
        if network.device.type == "cpu":
            use_strided_conv2d(network.module)
            use_fused_depthwise(network.module)
            keep_tile_buffers_in_heap()
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


class StridedConv2d(nn.Module):
    """A frozen strided convolution whose backward pass computes only its input's gradient, with a
    transposed convolution; the output is the wrapped convolution's, bit for bit.

    On a 2-core Zen 4, oneDNN's backward pass of lite0's strided depthwise convolutions took 2 to 6 ms
    where the transposed convolution takes 0.6 to 1.2 ms (512 px tile), and asymmetric "SAME" zeros
    are written once around a fresh buffer instead of F.pad's fill and copy forward and copy back.
    Nothing but the weight is kept for the backward pass. 4 to 8 % off a 1024x768 lite0 gradient.
    An image stem's (few input channels) takes :func:`dreamcore.native.overlap_add_input_gradient`
    on CPUs, another 4 %.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.use_native = True  # the stem's overlap-add; False where PyTorch's path measured faster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if not (x.requires_grad and torch.is_grad_enabled()) or conv.weight.requires_grad:
            return conv(x)
        pads = zero_padding(conv, x.shape[-2], x.shape[-1])
        return _StridedConvolution.apply(x, conv.weight, conv.bias, pads, conv.stride, conv.groups, self.use_native)


def use_strided_conv2d(module: nn.Module) -> int:
    """Wrap each strided convolution of ``module`` in :class:`StridedConv2d`; returns how many.

    Only those whose forward it knows: plain zero-padded ``nn.Conv2d`` and "SAME" ones (a
    ``same_padding`` method), undilated.
    """
    wrapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            known = isinstance(child, nn.Conv2d) and (
                type(child).forward is nn.Conv2d.forward or hasattr(child, "same_padding")
            )
            if (
                known
                and max(child.stride) > 1
                and child.dilation == (1, 1)
                and child.padding_mode == "zeros"
                and isinstance(child.padding, tuple)
                and not isinstance(parent, StridedConv2d)
            ):
                setattr(parent, name, StridedConv2d(child))
                wrapped += 1
    return wrapped


class _StridedConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pads, stride, groups, use_native):
        left, right, top, bottom = pads
        ctx.save_for_backward(weight)
        ctx.geometry = (x.shape, x.dtype, pads, stride, groups)
        ctx.use_native = use_native
        if left == right and top == bottom:
            return F.conv2d(x, weight, bias, stride, (top, left), 1, groups)
        return F.conv2d(zero_padded(x, pads), weight, bias, stride, 0, 1, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, dtype, (left, right, top, bottom), stride, groups = ctx.geometry
        height, width = shape[-2:]
        if groups == 1 and ctx.use_native:  # an image stem, on CPUs: see dreamcore.native
            pads = (left, right, top, bottom)
            fast = overlap_add_input_gradient(grad, weight, (height, width), pads, stride)
            if fast is not None:
                return fast, None, None, None, None, None, None
        # The rows and columns a last window did not reach (stride > 1) come back as output padding.
        leftover = tuple(
            padded - ((out - 1) * s + k)
            for padded, out, s, k in zip(
                (top + height + bottom, left + width + right), grad.shape[-2:], stride, weight.shape[-2:], strict=True
            )
        )
        # Under autocast the gradient arrives in the reduced precision the forward pass ran in.
        full = F.conv_transpose2d(grad, weight.to(grad.dtype), None, stride, 0, leftover, groups)
        return full[:, :, top : top + height, left : left + width].to(dtype), None, None, None, None, None, None


def native_stages(module: nn.Module) -> list[FusedDepthwise | StridedConv2d]:
    """The parts of a prepared network that can run native kernels on CPUs, each with a ``use_native``
    switch: EfficientNet-Lite's fused steps, and strided convolutions (an image stem's input gradient)."""
    stages: list[FusedDepthwise | StridedConv2d] = []
    for child in module.modules():
        fused = child.__dict__.get("expand_and_depthwise")
        if isinstance(fused, FusedDepthwise):
            stages.append(fused)
        if isinstance(child, StridedConv2d) and child.conv.groups == 1 and child.conv.in_channels <= 4:
            stages.append(child)
    return stages


def zero_padded(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pads)`` for non-negative pads, in ``x``'s memory format, writing each element once."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty(
        (*x.shape[:-2], top + height + bottom, left + width + right),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
    out[..., :top, :].zero_()
    out[..., top + height :, :].zero_()
    out[..., top : top + height, :left].zero_()
    out[..., top : top + height, left + width :].zero_()
    out[..., top : top + height, left : left + width].copy_(x)
    return out
