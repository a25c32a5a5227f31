"""EfficientNet-Lite's expansion and depthwise step as one native pass on CPUs: speed work beside the network.

An inverted-residual block spends most of its time moving its widest activation through memory: the
expansion (1x1 convolution), ReLU6, "SAME" padding, the depthwise convolution and ReLU6 write and
read it six times forward and as many back in PyTorch; :class:`FusedDepthwise` runs them as one
pass each way, in which the expansion never leaves the core's cache. An image stem's
input gradient (:func:`overlap_add_input_gradient`) is a matrix product and one native pass.

``native_kernels.cpp`` is compiled on first use with the machine's C++ compiler (``-march=native``,
about two seconds) into the user cache and loaded with ctypes. Without a compiler, off Linux, or with
``DREAMCORE_NATIVE=0``, PyTorch's operators run instead, with the same values up to float rounding.
Whether a network's dream uses them is measured per machine (:mod:`dreamcore.kernel_choice`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dreamcore.devices import cpu_flags
from dreamcore.networks.base import zero_padding
from dreamcore.networks.weights import cache_dir

log = logging.getLogger("dreamcore")

SOURCE = Path(__file__).with_name("native_kernels.cpp")
COMPILE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17")


def target_arch() -> str:
    """The -march the kernels are built for: the machine's own, or $DREAMCORE_NATIVE_ARCH (x86-64-v3 builds
    the AVX2 code an AVX-512 machine would not otherwise run, to measure it there)."""
    return os.environ.get("DREAMCORE_NATIVE_ARCH", "").strip() or "native"


def compile_flags() -> tuple[str, ...]:
    return (*COMPILE_FLAGS, f"-march={target_arch()}")


def compiler() -> str | None:
    """$CXX, else the first of g++, c++ and clang++ on the PATH."""
    return os.environ.get("CXX") or next(
        (found for name in ("g++", "c++", "clang++") if (found := shutil.which(name))), None
    )


def native_setting() -> str:
    """$DREAMCORE_NATIVE as "on" (1: always the native kernels), "off" (0: never) or "auto" (unset: the
    faster of the two paths, measured once per machine and network)."""
    value = os.environ.get("DREAMCORE_NATIVE", "").strip().lower()
    if value in ("0", "no", "off", "false"):
        return "off"
    if value in ("1", "yes", "on", "true"):
        return "on"
    return "auto"


@functools.cache  # one build and one load per process
def native_library() -> ctypes.CDLL | None:
    """The compiled kernels, building them into the cache on first use; None where they cannot run."""
    if native_setting() == "off":
        return None
    if not sys.platform.startswith("linux"):
        return None  # loading it into PyTorch's own OpenMP runtime is only arranged for here
    cxx = compiler()
    if cxx is None:
        log.info("No C++ compiler found: dreams on the CPU take the slower path (install g++ to speed them up).")
        return None
    try:
        library = cache_dir() / "native" / f"dreamcore-kernels-{build_key(cxx)}.so"
        if not library.exists():
            build(cxx, library)
        loaded = ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("Could not build the fast CPU kernels (%s); dreams take the slower path.", error)
        return None
    if len(openmp_runtimes()) > 1:
        # Two OpenMP runtimes would have their threads fight over the cores: slower, not faster.
        log.warning("The fast CPU kernels loaded a second OpenMP runtime; dreams take the slower path.")
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int
    loaded.dw_forward.argtypes = [pointer, size, pointer, pointer, size] + [pointer] * 4 + [size] * 11
    loaded.dw_backward.argtypes = [pointer] * 5 + [size] * 2 + [pointer] * 2 + [size] * 11
    loaded.overlap_add.argtypes = [pointer] * 2 + [size] * 11
    loaded.dw_forward.restype = loaded.dw_backward.restype = loaded.overlap_add.restype = size
    return loaded


def build_key(cxx: str) -> str:
    """Changes with the source, the flags, the compiler and the CPU (the code is -march=native)."""
    parts = [SOURCE.read_text(), " ".join(compile_flags()), cxx, compiler_version(cxx), " ".join(sorted(cpu_flags()))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@functools.cache  # a subprocess; asked again by each dream's kernel choice (dreamcore.kernel_choice)
def compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout


def build(cxx: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed: processes starting together never load half a file.
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        result = subprocess.run(
            [cxx, *compile_flags(), str(SOURCE), "-o", str(partial)], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise subprocess.SubprocessError(f"{cxx} failed: {result.stderr.strip()[-500:]}")
        os.replace(partial, library)
    log.debug("Built %s", library)


def openmp_runtimes() -> set[str]:
    """The OpenMP runtimes mapped into this process (Linux)."""
    with open("/proc/self/maps", encoding="ascii", errors="ignore") as maps:
        return {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line or "libomp" in line}


class FusedDepthwise:
    """Stands in for ``MBConvBlock.expand_and_depthwise`` of a prepared (batch norms folded) block.

    Runs the native pass for fp32 CPU tensors with frozen weights, and PyTorch's otherwise
    (autocast, trainable weights, no compiler), which gives the same values. With a small expansion
    (its weight fits a core's L1 cache: lite's early, wide blocks), the native pass expands only the
    few rows a window needs, so the block's widest activation is never written to memory; it keeps
    one byte per value of where the expansion's ReLU6 passes gradient. A larger expansion is a
    matrix product PyTorch (oneDNN) does better; then only its ReLU6 is part of the native pass.
    """

    def __init__(
        self, depthwise_conv: nn.Module, expand_conv: nn.Conv2d | None = None, *, expand_natively: bool | None = None
    ) -> None:
        self.use_native = True  # False where PyTorch's path measured faster (dreamcore.kernel_choice)
        self.depthwise_conv = depthwise_conv  # what PyTorch's path calls (perhaps a StridedConv2d)
        self.conv = conv = getattr(depthwise_conv, "conv", depthwise_conv)  # the nn.Conv2d inside
        self.expand_conv = expand_conv
        if expand_natively is None:
            expand_natively = expand_conv is not None and expand_conv.weight.numel() * 4 <= 32 << 10
        self.native_expansion = expand_conv is not None and expand_natively
        self.relu_input = expand_conv is not None and not expand_natively  # the expansion's ReLU6, on reading
        channels, _, kh, kw = conv.weight.shape
        self.taps = conv.weight.detach().reshape(channels, kh * kw).t().contiguous()  # (k*k, C): a row per tap
        self.bias = bias_of(conv)
        # The native expansion's weights, None without one; its input channels, else the depthwise ones.
        self.expansion = self.expansion_transposed = self.expansion_bias = None
        self.channels_in = channels
        if self.native_expansion:
            expansion = expand_conv.weight.detach().reshape(channels, -1)  # (C, Cin)
            self.channels_in = expansion.shape[1]
            self.expansion = expansion.t().contiguous()  # (Cin, C): a row per input channel
            padded = -(-self.channels_in // 16) * 16  # the backward pass's rows, in whole 16-lane vectors
            self.expansion_transposed = F.pad(expansion, (0, padded - self.channels_in)).contiguous()
            self.expansion_bias = bias_of(expand_conv)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        library = native_library() if self.use_native else None
        if library is None or not self.takes(x):
            if self.expand_conv is not None:
                x = F.relu6(self.expand_conv(x))
            return F.relu6(self.depthwise_conv(x))
        if self.relu_input:
            x = self.expand_conv(x)
        return _FusedDepthwiseFunction.apply(x, self, zero_padding(self.conv, x.shape[-2], x.shape[-1]))

    def takes(self, x: torch.Tensor) -> bool:
        conv, expand = self.conv, self.expand_conv
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and conv.weight.dtype == torch.float32
            and not conv.weight.requires_grad
            and not torch.is_autocast_enabled("cpu")
            and conv.groups == conv.in_channels == conv.out_channels
            and conv.kernel_size[0] == conv.kernel_size[1] <= 16
            and conv.stride[0] == conv.stride[1] <= conv.kernel_size[0]
            and conv.dilation == (1, 1)
            and isinstance(conv.padding, tuple)
            and conv.padding_mode == "zeros"
            and (
                not self.native_expansion
                or (
                    expand.weight.dtype == torch.float32
                    and not expand.weight.requires_grad
                    and expand.kernel_size == (1, 1)
                    and expand.stride == (1, 1)
                    and expand.padding == (0, 0)
                    and expand.groups == 1
                    and conv.in_channels % 16 == 0
                )
            )
        )


def bias_of(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias.detach().contiguous() if conv.bias is not None else torch.zeros(conv.out_channels)


def address(tensor: torch.Tensor | None) -> int | None:
    """What a kernel takes for an optional array: its data pointer, or NULL."""
    return tensor.data_ptr() if tensor is not None else None


class _FusedDepthwiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, stage: FusedDepthwise, pads):
        library = native_library()
        left, right, top, bottom = pads
        n, _, height, width = x.shape
        channels = stage.conv.out_channels
        kernel, stride = stage.conv.kernel_size[0], stage.conv.stride[0]
        out_height = (top + height + bottom - kernel) // stride + 1
        out_width = (left + width + right - kernel) // stride + 1
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.empty((n, channels, out_height, out_width), memory_format=torch.channels_last)
        # Where the expansion's ReLU6 passes gradient, a byte per value: what the backward pass needs of it.
        mask = torch.empty((n, height, width, channels), dtype=torch.uint8) if stage.native_expansion else None
        geometry = (n, height, width, channels, kernel, stride, top, left, out_height, out_width)
        failed = library.dw_forward(
            x.data_ptr(),
            stage.channels_in,
            address(stage.expansion),
            address(stage.expansion_bias),
            int(stage.relu_input),
            stage.taps.data_ptr(),
            stage.bias.data_ptr(),
            y.data_ptr(),
            address(mask),
            *geometry,
            torch.get_num_threads(),
        )
        if failed:
            raise RuntimeError(f"fused depthwise kernel refused geometry {geometry}")
        ctx.save_for_backward(x if stage.relu_input else None, y, mask)
        ctx.stage, ctx.geometry = stage, geometry
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y, mask = ctx.saved_tensors
        stage = ctx.stage
        grad = grad.contiguous(memory_format=torch.channels_last)
        n, height, width = ctx.geometry[:3]
        grad_x = torch.empty((n, stage.channels_in, height, width), memory_format=torch.channels_last)
        transposed = stage.expansion_transposed
        failed = native_library().dw_backward(
            address(x),
            stage.taps.data_ptr(),
            y.data_ptr(),
            grad.data_ptr(),
            address(transposed),
            transposed.shape[1] if transposed is not None else 0,
            stage.channels_in,
            address(mask),
            grad_x.data_ptr(),
            *ctx.geometry,
            torch.get_num_threads(),
        )
        if failed:
            raise RuntimeError(f"fused depthwise kernel refused geometry {ctx.geometry}")
        return grad_x, None, None


def overlap_add_input_gradient(
    grad: torch.Tensor,
    weight: torch.Tensor,
    input_size: tuple[int, int],
    pads: tuple[int, int, int, int],
    stride: tuple[int, int],
) -> torch.Tensor | None:
    """The input gradient of a frozen dense convolution with few input channels (an image stem), or
    None where this does not apply (the caller then takes PyTorch's path).

    One matrix product gives every tap's share, a plane per (input channel, tap); a native pass adds
    them up where the windows overlap. oneDNN's transposed convolution spends 3 ms on lite0's stem
    for a 512 px tile, as it writes 3-channel pixels; this takes 1.2 ms.
    """
    out_channels, channels, kernel, kernel_w = weight.shape
    if (
        grad.device.type != "cpu"
        or grad.dtype != torch.float32
        or weight.dtype != torch.float32
        or grad.dim() != 4
        or kernel != kernel_w
        or stride[0] != stride[1]
        or channels > 4
        or channels * kernel * kernel > 256
        or input_size[1] > 16384
    ):
        return None
    library = native_library()
    if library is None:
        return None
    n, _, out_height, out_width = grad.shape
    taps = weight.detach().reshape(out_channels, channels * kernel * kernel).t().contiguous()
    if grad.is_contiguous(memory_format=torch.channels_last):  # pixels of channels: a transposed view
        per_pixel = grad.permute(0, 2, 3, 1).reshape(n, out_height * out_width, out_channels).transpose(1, 2)
    else:
        per_pixel = grad.contiguous().view(n, out_channels, out_height * out_width)
    shares = torch.matmul(taps, per_pixel)  # (n, channels * k * k, out_height * out_width)
    left, _, top, _ = pads
    height, width = input_size
    grad_input = torch.empty((n, channels, height, width))
    geometry = (n, channels, height, width, kernel, stride[0], top, left, out_height, out_width)
    if library.overlap_add(shares.data_ptr(), grad_input.data_ptr(), *geometry, torch.get_num_threads()):
        return None
    return grad_input


def use_fused_depthwise(module: nn.Module) -> int:
    """Give each EfficientNet-Lite block of ``module`` whose batch norms are folded the fused expansion
    and depthwise step (:class:`FusedDepthwise`); returns how many. Blocks that have it are left alone."""
    from dreamcore.networks.efficientnet_lite import MBConvBlock

    fused = 0
    for block in module.modules():
        if not isinstance(block, MBConvBlock) or isinstance(block.__dict__.get("expand_and_depthwise"), FusedDepthwise):
            continue
        if not isinstance(block._bn1, nn.Identity) or (block.has_expansion and not isinstance(block._bn0, nn.Identity)):
            continue  # the kernel adds the convolutions' biases only: their batch norms must be folded into them
        expand_conv = block._expand_conv if block.has_expansion else None
        block.expand_and_depthwise = FusedDepthwise(block._depthwise_conv, expand_conv)
        fused += 1
    return fused
