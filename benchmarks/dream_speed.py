"""Dreaming speed and memory: the fast path against a plain reference, on the default network and preset.

    python benchmarks/dream_speed.py                 # 1024x768, alternating runs, then 4096x4096 memory
    python benchmarks/dream_speed.py --rounds 5 --skip-big

Prints seconds, seconds per iteration and the median speed-up over alternated runs in one process
(these machines are noisy), similarity figures between the outputs (SSIM on luminance), and
the peak resident memory of dreaming a 4096x4096 image in a fresh process.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import reference_gradient

from dreamcore.api import resolve
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--big", type=int, default=4096)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--save", type=Path, help="folder to write both outputs to, for a look")
    parser.add_argument("--device", default="cpu", help="cpu (the target's machine), cuda or mps")
    parser.add_argument("--big-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_image_run(args.big_child, args.device)
        return
    device = torch.device(args.device)

    width, height = (int(v) for v in args.size.split("x"))
    photo = Image.open(SAMPLES / "coffee.png").convert("RGB").resize((width, height), Image.LANCZOS)
    original = to_tensor(photo).to(device)
    settings = resolve(DreamSettings.from_preset("default", seed=1), load_network("lite0", device))
    network = load_network(settings.network, device)
    reference_network = copy.deepcopy(network)  # before the fast path folds and re-lays the cached one
    objective = parse(settings.objective, network.catalog)
    contenders = {
        "reference": reference_gradient(reference_network, parse(settings.objective, reference_network.catalog)),
        "fast": TiledGradient(network, objective, tile_size=settings.tile_size),
        "fast-bf16": TiledGradient(network, objective, tile_size=settings.tile_size, precision="bf16"),
    }
    steps = settings.octaves * settings.iterations
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {width}x{height}, "
        f"network {settings.network}, objective {settings.objective}, {settings.octaves} octaves x "
        f"{settings.iterations} iterations, fast precision {contenders['fast'].dtype or 'fp32'} (auto), "
        f"device {device}"
    )

    def run(name: str) -> tuple[float, torch.Tensor]:
        started = time.perf_counter()
        out = deep_dream(
            original,
            contenders[name],
            octaves=settings.octaves,
            octave_scale=settings.octave_scale,
            iterations=settings.iterations,
            step=settings.step,
            jitter=settings.jitter,
            seed=settings.seed,
        )
        return time.perf_counter() - started, out

    run("fast")  # warm-up: one-time preparation and allocator growth are not what we measure
    order = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in order}
    outputs: dict[str, torch.Tensor] = {}
    ratios = []
    for round_number in range(args.rounds):
        for name in order if round_number % 2 == 0 else order[::-1]:
            seconds, outputs[name] = run(name)
            times[name].append(seconds)
        ratios.append(times["reference"][-1] / times["fast"][-1])
        print(f"  round {round_number + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in order))

    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>9}: {median:.2f} s median, {median / steps * 1000:.0f} ms per iteration")
    print(
        f"speed-up of fast over reference: {statistics.median(ratios):.2f}x median "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x); fast-bf16 over reference: "
        f"{statistics.median(times['reference']) / statistics.median(times['fast-bf16']):.2f}x"
    )

    def quarter(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, scale_factor=0.25, mode="area")

    print("similarity to the reference output (SSIM, 1 = identical; full size / at 1/4 size, the overall look):")
    for name in ("fast", "fast-bf16"):
        print(
            f"  {name:>9}: {ssim(outputs[name], outputs['reference']):.3f} / "
            f"{ssim(quarter(outputs[name]), quarter(outputs['reference'])):.3f}"
        )
    print(
        f"  for scale, the input photo vs the reference output: {ssim(original, outputs['reference']):.3f} / "
        f"{ssim(quarter(original), quarter(outputs['reference'])):.3f}"
    )
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
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
