"""Which CPU path a network's dream takes, the native kernels or PyTorch's own operators: measured, not assumed.

The native kernels (:mod:`dreamcore.native`) are faster where they were tuned, and a build for a
CPU they were not tuned for can be slower than PyTorch (on AVX2 they once made the default dream 3.5x
slower). So the first time a network dreams on a machine, both paths compute its gradient on one
tile, taking turns, and the faster is kept. The choice is cached beside the compiled kernels, keyed
by what decides it: the kernels' build (source, flags, compiler, CPU flags), the CPU model, torch's
version and instruction set, and the thread count; any change measures again.
``DREAMCORE_NATIVE=1`` or ``0`` forces either path without measuring.

Reduced precision is chosen the same way: where the CPU has bfloat16 hardware (AMX), ``precision="auto"``
times the network's gradient in bfloat16 against fp32 once, and keeps bfloat16 only where it is faster
(VGG16's dense convolutions gain several times; lite0's depthwise ones lose, and lose faithfulness too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dreamcore import native
from dreamcore.devices import cpu_model
from dreamcore.networks.weights import cache_dir

log = logging.getLogger("dreamcore")

ROUNDS = 3  # timed gradients per path, after one warm-up each: about a second for lite0


@dataclass(frozen=True)
class KernelPath:
    native: bool
    reason: str

    def describe(self) -> str:
        return f"{'native CPU kernels' if self.native else 'PyTorch operators'} ({self.reason})"


def choices_file() -> Path:
    return cache_dir() / "native" / "choices.json"


def machine_key() -> str:
    """Changes with anything that changes which path is faster here."""
    cxx = native.compiler() or ""
    parts = [
        native.build_key(cxx) if cxx else "no compiler",
        cpu_model(),
        torch.__version__,
        torch.backends.cpu.get_cpu_capability(),
        os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        str(torch.get_num_threads()),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def read_choices() -> dict[str, dict]:
    try:
        data = json.loads(choices_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_choice(key: str, entry: dict) -> None:
    path = choices_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        choices = read_choices()
        choices[key] = entry
        # Written beside its final name and renamed: two processes never read half a file.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as scratch:
            json.dump(choices, scratch, indent=1, sort_keys=True)
        os.replace(scratch.name, path)
    except OSError as error:
        log.debug("Could not cache the kernel choice in %s: %s", path, error)


_measure_lock = threading.Lock()  # two dreams starting together measure once, not against each other


def choose_kernel_path(network_name: str, time_gradient: Callable[[bool], float], shape: str) -> KernelPath:
    """The path ``network_name`` dreams with on this machine. ``time_gradient(native)`` computes one
    gradient on the network's shapes (``shape`` describes them) with the native kernels on or off and
    returns the seconds it took; it is called only when the choice is not cached."""
    setting = native.native_setting()
    if setting == "on":
        return KernelPath(True, "forced by DREAMCORE_NATIVE=1")
    if setting == "off":
        return KernelPath(False, "native kernels switched off by DREAMCORE_NATIVE=0")
    if native.native_library() is None:
        return KernelPath(
            False, "the native kernels cannot run here (no compiler, a failed build or not Linux: see the log)"
        )
    entry = measured(f"{machine_key()}:{network_name}", time_gradient, shape, ("native_ms", "pytorch_ms"))
    return KernelPath(entry["native_ms"] <= entry["pytorch_ms"], describe_measurement(entry))


def measured(key: str, time_gradient: Callable[[bool], float], shape: str, names: tuple[str, str]) -> dict:
    """The cached timing of two ways to compute a gradient (``time_gradient(True)`` and ``(False)``, stored
    under ``names``), measured now and cached when it is not cached yet."""
    with _measure_lock:
        entry = read_choices().get(key)
        if not isinstance(entry, dict) or not set(names) <= entry.keys():
            entry = measure(time_gradient, shape, names)
            write_choice(key, entry)
            log.info(
                "Measured %s: %s %.0f ms, %s %.0f ms per %s",
                key,
                names[0],
                entry[names[0]],
                names[1],
                entry[names[1]],
                shape,
            )
    return entry


def measure(time_gradient: Callable[[bool], float], shape: str, names: tuple[str, str]) -> dict:
    times: dict[bool, list[float]] = {True: [], False: []}
    for way in (True, False):
        time_gradient(way)  # warm-up: one-time allocation and oneDNN's kernel choice are not the way's speed
    for round_number in range(ROUNDS):
        for way in (True, False) if round_number % 2 == 0 else (False, True):
            times[way].append(time_gradient(way))
    return {
        names[0]: round(statistics.median(times[True]) * 1000, 1),
        names[1]: round(statistics.median(times[False]) * 1000, 1),
        "shape": shape,
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe_measurement(entry: dict) -> str:
    faster = "native" if entry["native_ms"] <= entry["pytorch_ms"] else "PyTorch"
    return (
        f"{faster} measured faster on this machine: native {entry['native_ms']:.0f} ms, "
        f"PyTorch {entry['pytorch_ms']:.0f} ms per {entry.get('shape', 'gradient')}"
    )


def measured_choices() -> dict[str, KernelPath]:
    """This machine's cached choices by network name (what ``dreamcore models`` shows)."""
    prefix = machine_key() + ":"
    return {
        key.removeprefix(prefix): KernelPath(entry["native_ms"] <= entry["pytorch_ms"], describe_measurement(entry))
        for key, entry in read_choices().items()
        if key.startswith(prefix)
        and ":reduced-precision" not in key
        and isinstance(entry, dict)
        and {"native_ms", "pytorch_ms"} <= entry.keys()
    }


def choose_reduced_precision(
    network_name: str, time_gradient: Callable[[bool], float], shape: str, fp32_path: KernelPath
) -> bool:
    """Whether ``network_name`` dreams faster in reduced precision on this machine than in fp32 on
    ``fp32_path``. ``time_gradient(reduced)`` computes one gradient in reduced precision or in fp32 and
    returns its seconds; it is called only when the choice is not cached."""
    fp32 = "native" if fp32_path.native else "pytorch"  # fp32's speed, and so the answer, depends on its path
    key = f"{machine_key()}:{network_name}:reduced-precision:{fp32}"
    entry = measured(key, time_gradient, shape, ("reduced_ms", "fp32_ms"))
    return entry["reduced_ms"] < entry["fp32_ms"]
