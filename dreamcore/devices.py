"""Choosing where and in which precision to run."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

import torch

from dreamcore.errors import UsageError


def pick_device(requested: str | torch.device = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU; ``requested`` (or $DREAMCORE_DEVICE) overrides."""
    if isinstance(requested, torch.device):
        return requested
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        choice = os.environ.get("DREAMCORE_DEVICE", "auto").strip().lower() or "auto"
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as error:
        raise UsageError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("MPS was asked for but is not available on this machine; use --device cpu or auto.")
    return device


@functools.cache  # read once: callers ask on every optimisation step
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name as the system reports it ("" where it does not)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def cpu_bf16_pays(flags: frozenset[str] | None = None) -> bool:
    """Whether bfloat16 autocast makes dreaming faster on this CPU.

    Only with AMX tiles. Measured on a 2-core AVX512-BF16 CPU (Zen 4) with 512 px tiles: bf16 232 ms
    against fp32 222 ms per 1024x768 gradient, and a less faithful result, so fp32 it is there.
    And only where PyTorch and oneDNN may use those instructions: ``ATEN_CPU_CAPABILITY=avx2`` or
    ``ONEDNN_MAX_CPU_ISA=AVX2`` (how an AVX2 machine is imitated) leave bf16 emulated, 40x slower.
    """
    if "amx_bf16" not in (cpu_flags() if flags is None else flags):
        return False
    onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and (onednn_isa == "ALL" or "AMX" in onednn_isa)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The reduced precision to run the network in, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16", "fp16"):
        raise UsageError(f"Unknown precision {precision!r}; use auto, fp32, bf16 or fp16.")
    if device.type == "cuda":
        if precision == "fp16":
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16 if precision in ("auto", "fp16") else torch.bfloat16
    if precision == "bf16" or (precision == "auto" and cpu_bf16_pays()):
        return torch.bfloat16
    return None


def default_tile_size(device: torch.device) -> int:
    """When the settings leave it open, the tile size: tiles hold at most its square in pixels
    (:func:`dreamcore.gradients.tile_grid`).

    On CPUs 512 px tiles are faster than whole images (222 against 409 ms for a 1024x768 lite0
    gradient, 2 cores) and bound memory. A GPU is launch-bound on such tiles: untiled, the same
    gradient took 6 ms against 19 ms in 512 px tiles on an H100, so it takes 2048 px tiles (about 3 GB
    of activations for lite0 in fp32).
    """
    return 2048 if device.type in ("cuda", "mps") else 512


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last only on CPUs: on CUDA, cuDNN 9 builds a plan for every new NHWC input shape
    (1 to 4 s each on an H100, so every octave of every new photo size stalled) for no steady gain."""
    return device.type == "cpu"


def precision_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (from :func:`autocast_dtype`), or nothing for plain fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache  # process-wide and idempotent: the first CPU network to be prepared sets it
def keep_tile_buffers_in_heap() -> bool:
    """Let glibc reuse freed tile-sized buffers instead of mapping fresh pages for each one.

    By default glibc hands out allocations of a few MB and up as fresh mmaps and returns them on
    free, so every activation of every tile cost the kernel page faults and zeroing: 80 000 faults
    and 140 ms of system time per 1024x768 lite0 gradient (300 ms against 225 ms with this), on a
    2-core Zen 4. Buffers up to 32 MB (a 512 px tile's largest activation is 25 MB) now come from the
    heap, which keeps up to 256 MB of freed memory for the next tile. Returns whether it applied:
    only on glibc, and not when the user set glibc's own MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_.
    """
    if not sys.platform.startswith("linux") or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl and other libcs
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # The mmap threshold first: setting either one turns off glibc's own adjustment of both.
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))
