"""Dreaming speed and memory: the fast path against a plain reference, on the default network and preset.

    python benchmarks/dream_speed.py                 # 1024x768, alternating runs, then 4096x4096 memory
    python benchmarks/dream_speed.py --rounds 5 --skip-big

Prints seconds, seconds per iteration and the median speed-up over alternated runs (these machines
are noisy), similarity figures between the outputs (SSIM on luminance), and the peak resident memory
of dreaming a 4096x4096 image in a fresh process.

Each contender (the plain reference, the engine, and variants for comparison) runs in a process
of its own and they take turns: memory one has shaped (the heap, the C library's allocator settings)
never slows or speeds another. Contenders this machine cannot run fast are skipped, with the reason
(bfloat16 is emulated, about 40x slower, without AVX512-BF16 or AMX). To see an AVX2 machine's figures
on an AVX-512 one:

    DREAMCORE_NATIVE_ARCH=x86-64-v3 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/dream_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import reference_gradient

from dreamcore.api import resolve
from dreamcore.devices import autocast_dtype, cpu_flags, cpu_model, keep_tile_buffers_in_heap
from dreamcore.gradients import TiledGradient
from dreamcore.images import to_image, to_tensor
from dreamcore.networks import load_network
from dreamcore.objectives import parse
from dreamcore.render import deep_dream
from dreamcore.settings import DreamSettings

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data"


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity of two (1, 3, H, W) images in [0, 1], on luminance, 11x11 Gaussian window."""
    a, b = a.float().cpu(), b.float().cpu()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    x, y = (a * weights).sum(1, keepdim=True), (b * weights).sum(1, keepdim=True)
    coords = torch.arange(11) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).view(1, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited from a parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big_image_run(side: int, device: str) -> None:
    """Runs in a child process so its peak memory is its own."""
    settings = DreamSettings.from_preset("default", iterations=2, seed=0)
    network = load_network(settings.network, device)
    settings = resolve(settings, network)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, side // 16, side // 16, generator=generator)
    image = F.interpolate(image, size=(side, side), mode="bilinear").to(device)
    started = time.perf_counter()
    gradient = TiledGradient(network, parse(settings.objective, network.catalog), tile_size=settings.tile_size)
    deep_dream(image, gradient, octaves=settings.octaves, iterations=settings.iterations, step=settings.step, seed=0)
    gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    print(
        json.dumps(
            {
                "side": side,
                "seconds": time.perf_counter() - started,
                "peak_rss_mb": peak_rss_mb(),
                "gpu_peak_mb": gpu_peak_mb,
            }
        )
    )


class Workload:
    """The benchmark's photo and settings, built the same way in the parent and in the reference's process."""

    def __init__(self, size: str, device: torch.device, precision: str = "auto") -> None:
        width, height = (int(v) for v in size.split("x"))
        photo = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((width, height), Image.LANCZOS)
        self.original = to_tensor(photo).to(device)
        settings = DreamSettings.from_preset("default", seed=1, precision=precision)
        self.settings = resolve(settings, load_network("lite0", device))
        self.steps = self.settings.octaves * self.settings.iterations

    def dream(self, gradient) -> tuple[float, torch.Tensor]:
        settings = self.settings
        started = time.perf_counter()
        out = deep_dream(
            self.original,
            gradient,
            octaves=settings.octaves,
            octave_scale=settings.octave_scale,
            iterations=settings.iterations,
            step=settings.step,
            jitter=settings.jitter,
            seed=settings.seed,
        )
        return time.perf_counter() - started, out


CONTENDERS = {
    "reference": "the plain version (fp32, whole network, a hook, no tiling), with the C library's default allocator",
    "reference-tuned": "the same code after the allocator tuning the fast path makes for its whole process",
    "fast": "the engine: dreamcore's TiledGradient, as the command line and the bot run it",
    "fast-pytorch": "the engine with DREAMCORE_NATIVE=0: PyTorch's operators where the native kernels would run",
    "fast-bf16": "the engine forced to bfloat16 autocast",
}
CONTENDER_ENV = {"fast-pytorch": {"DREAMCORE_NATIVE": "0"}}


def skipped_contenders(device: torch.device) -> dict[str, str]:
    """The contenders this machine cannot run fast, with the reason."""
    skipped = {}
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if not ({"avx512_bf16", "amx_bf16"} & cpu_flags()) or not capability.startswith("AVX512"):
            skipped["fast-bf16"] = (
                f"bfloat16 is emulated on this CPU (PyTorch runs {capability} code, "
                f"{'no' if not {'avx512_bf16', 'amx_bf16'} & cpu_flags() else 'with'} AVX512-BF16/AMX): "
                "about 40x slower than fp32, it would not finish in any reasonable time"
            )
    return skipped


def contender_gradient(name: str, network, settings):
    objective = parse(settings.objective, network.catalog)
    if name.startswith("reference"):
        if name == "reference-tuned":
            keep_tile_buffers_in_heap()
        return reference_gradient(network, objective)
    precision = "bf16" if name == "fast-bf16" else settings.precision
    return TiledGradient(network, objective, tile_size=settings.tile_size, precision=precision)


def contender_child(name: str, size: str, device: str, precision: str, output: Path) -> None:
    """One contender in a process of its own, so that none runs in memory another has shaped (the
    reference's whole-image buffers fragment the heap the fast path reuses for its tiles, and the fast
    path tunes the C library's allocator for the whole process, which a plain program would not have).
    Dreams once per line on stdin; answers each with the seconds taken, and leaves the output in ``output``."""
    workload = Workload(size, torch.device(device), precision)
    network = load_network(workload.settings.network, device)
    gradient = contender_gradient(name, network, workload.settings)
    kernels = gradient.kernel_path.describe() if hasattr(gradient, "kernel_path") else "PyTorch operators (plain code)"
    for _line in sys.stdin:
        seconds, out = workload.dream(gradient)
        torch.save(out.cpu(), output)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "kernels": kernels}), flush=True)


class ContenderProcess:
    """A contender in a process of its own (``script --contender-child NAME OUTPUT ...``): it dreams once per line
    sent to it, leaves the output in ``output`` and answers with a line of JSON."""

    def __init__(self, script: str, name: str, output: Path, arguments: list[str], env: dict[str, str]) -> None:
        self.output = output
        self.process = subprocess.Popen(
            [sys.executable, script, "--contender-child", name, str(output), *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )

    def ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit("A contender's process ended early; see its error above.")
        answer = json.loads(answer)
        self.peak_rss_mb = answer["peak_rss_mb"]
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


class DreamContender(ContenderProcess):
    def __init__(self, name: str, size: str, device: str, precision: str, output: Path) -> None:
        arguments = ["--size", size, "--device", device, "--precision", precision]
        super().__init__(__file__, name, output, arguments, CONTENDER_ENV.get(name, {}))

    def dream(self) -> tuple[float, torch.Tensor]:
        answer = self.ask("dream")
        self.kernels = answer["kernels"]
        return answer["seconds"], torch.load(self.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--big", type=int, default=4096)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--save", type=Path, help="folder to write the outputs to, for a look")
    parser.add_argument("--device", default="cpu", help="cpu (the target's machine), cuda or mps")
    parser.add_argument("--precision", default="auto", help="the engine's precision: auto (as users get it) or fp32")
    parser.add_argument("--big-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--contender-child", nargs=2, metavar=("NAME", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_image_run(args.big_child, args.device)
        return
    if args.contender_child:
        name, output = args.contender_child
        contender_child(name, args.size, args.device, args.precision, Path(output))
        return
    device = torch.device(args.device)

    workload = Workload(args.size, device, args.precision)
    settings, original, steps = workload.settings, workload.original, workload.steps
    fast_precision = autocast_dtype(device, args.precision)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    print(
        f"CPU {cpu_model() or 'unknown'}; PyTorch runs {torch.backends.cpu.get_cpu_capability()} code; "
        f"oneDNN {onednn.group(1) if onednn else 'unknown'}"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {args.size}, "
        f"network {settings.network}, objective {settings.objective}, {settings.octaves} octaves x "
        f"{settings.iterations} iterations, fast precision {fast_precision or 'fp32'} ({args.precision}), "
        f"device {device}"
    )
    skipped = skipped_contenders(device)
    contenders = [name for name in CONTENDERS if name not in skipped]
    print("each in a process of its own, taking turns:")
    for name in contenders:
        print(f"  {name:>16}: {CONTENDERS[name]}")
    for name, reason in skipped.items():
        print(f"  {name:>16}: skipped: {reason}")

    with tempfile.TemporaryDirectory() as scratch:
        processes = {
            name: DreamContender(name, args.size, args.device, args.precision, Path(scratch) / f"{name}.pt")
            for name in contenders
        }
        for process in processes.values():
            process.dream()  # warm-up: one-time preparation and allocator growth are not what we measure
        print("kernel path per contender:")
        for name, process in processes.items():
            print(f"  {name:>16}: {process.kernels}")
        order = list(processes)
        times: dict[str, list[float]] = {name: [] for name in order}
        outputs: dict[str, torch.Tensor] = {}
        for round_number in range(args.rounds):
            for name in order if round_number % 2 == 0 else order[::-1]:
                seconds, outputs[name] = processes[name].dream()
                times[name].append(seconds)
            print(f"  round {round_number + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in order))
        for process in processes.values():
            process.close()

    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:>16}: {median:.2f} s median, {median / steps * 1000:.0f} ms per iteration")

    def speed_up(slow: str, fast: str) -> str:
        ratios = [a / b for a, b in zip(times[slow], times[fast], strict=True)]
        return (
            f"{statistics.median(ratios):.2f}x median (min {min(ratios):.2f}x, max {max(ratios):.2f}x, "
            f"same-round ratios)"
        )

    print(f"speed-up, fast over reference (the target's figure): {speed_up('reference', 'fast')}")
    print(f"speed-up, fast over reference-tuned:                 {speed_up('reference-tuned', 'fast')}")
    print(f"speed-up, fast over fast-pytorch (native kernels):   {speed_up('fast-pytorch', 'fast')}")
    if "fast-bf16" in times:
        print(f"speed-up, fast-bf16 over reference:                  {speed_up('reference', 'fast-bf16')}")
    outputs = {name: out.to(device) for name, out in outputs.items()}

    def quarter(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, scale_factor=0.25, mode="area")

    print("similarity to the reference output (SSIM, 1 = identical; full size / at 1/4 size, the overall look):")
    for name in [n for n in ("fast", "fast-pytorch", "fast-bf16", "reference-tuned") if n in outputs]:
        print(
            f"  {name:>16}: {ssim(outputs[name], outputs['reference']):.3f} / "
            f"{ssim(quarter(outputs[name]), quarter(outputs['reference'])):.3f}"
        )
    print(
        f"  for scale, the input photo vs the reference output: {ssim(original, outputs['reference']):.3f} / "
        f"{ssim(quarter(original), quarter(outputs['reference'])):.3f}"
    )
    print("peak RSS: " + ", ".join(f"{name} {process.peak_rss_mb:.0f} MB" for name, process in processes.items()))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, out in outputs.items():
            to_image(out).save(args.save / f"{name}.png")

    if not args.skip_big:
        child = subprocess.run(
            [sys.executable, __file__, "--big-child", str(args.big), "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"{result['side']}x{result['side']}: {result['seconds']:.1f} s for 4 octaves x 2 iterations, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB (target at most 3072 MB)"
            + (f", GPU peak {result['gpu_peak_mb']:.0f} MB" if result["gpu_peak_mb"] is not None else "")
        )


if __name__ == "__main__":
    main()
