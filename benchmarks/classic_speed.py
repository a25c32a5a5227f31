"""The classic networks' dreaming speed against what the machine allows (issue 18).

    python benchmarks/classic_speed.py --network googlenet            # inception_4c
    python benchmarks/classic_speed.py --network vgg16 --rounds 2     # conv4_3
    python benchmarks/classic_speed.py --network inception_v3         # mixed_6a
    python benchmarks/classic_speed.py --network lite0

With no real weights offline, a random-weight checkpoint of the project's own architecture (batch
norms calibrated on the sample photo, so no layer is all zeros) is written to a temporary
DREAMCORE_CACHE and imported the way users import weights. Timing does not depend on the values.

Prints the CPU, the instruction set PyTorch runs, the oneDNN version, the work per dream (FLOPs of
the forward pass and the input gradient, counted with FlopCounterMode over every octave's tiles),
the machine's dense 3x3 convolution rate measured in this run, the limit (work / rate), and for
each contender (each in a process of its own, taking turns) the seconds, the fraction of the limit,
the median of same-round speed-ups over the plain reference, SSIM at 1/4 size against the fp32
reference, and peak RSS. These machines are shared and noisy: compare only figures from one run. Seconds
are given both on the wall clock and in the contender's CPU time, against limits measured the same
two ways (the CPU-time figures move less when other people's processes take the cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dream_speed import ContenderProcess, peak_rss_mb, ssim
from reference import reference_gradient

from dreamcore.devices import autocast_dtype, cpu_model, default_tile_size
from dreamcore.gradients import TiledGradient, tile_grid
from dreamcore.images import to_tensor
from dreamcore.networks import ARCHITECTURES, import_weights, load_network
from dreamcore.networks.base import Stage
from dreamcore.objectives import parse
from dreamcore.render import deep_dream, octave_shapes
from dreamcore.settings import get_preset, preset_objective

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data"
LAYERS = {"googlenet": "inception_4c", "vgg16": "conv4_3", "inception_v3": "mixed_6a"}
OCTAVES, OCTAVE_SCALE, ITERATIONS, STEP, JITTER, SEED = 4, 1.4, 10, 0.006, 32, 1

CONTENDERS = {
    "reference": "plain PyTorch DeepDream code: fp32, whole network with a hook, no tiling (benchmarks/reference.py)",
    "fast": "the engine: dreamcore's TiledGradient as the command line and the bot run it",
    "fast-unrewritten": "the engine without the classic networks' rewrites (DREAMCORE_CLASSIC_REWRITES=0)",
    "fast-fp32": "the engine forced to fp32 (shown where the engine picks a reduced precision)",
    "fast-nchw": "the engine with the network and its tiles left in NCHW instead of channels-last",
    "fast-tileN": "the engine with N px tiles (fast-tile768, fast-tile1024, ...) instead of the device's default",
}
CONTENDER_ENV = {"fast-unrewritten": {"DREAMCORE_CLASSIC_REWRITES": "0"}}


def photo(size: str) -> torch.Tensor:
    width, height = (int(v) for v in size.split("x"))
    return to_tensor(Image.open(SAMPLES / "coffee.png").convert("RGB").resize((width, height), Image.LANCZOS))


@torch.no_grad()
def random_checkpoint(arch: str, path: Path, seed: int = 0) -> None:
    """A random-weight checkpoint of ``arch`` (torchvision's parameter names) with plausible batch norms.

    Convolutions get He initialisation, so VGG's signal neither vanishes nor explodes; each batch
    norm's running statistics are those of its input on the sample photo (a calibration pass in
    training mode), so every layer's activations are normalised and about half its ReLUs fire.
    """
    torch.manual_seed(seed)
    module = ARCHITECTURES[arch].builder()(1000)
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, nonlinearity="relu")
        elif isinstance(child, nn.BatchNorm2d):
            child.momentum = None  # a plain average over the calibration pass
            nn.init.uniform_(child.weight, 0.8, 1.2)
            nn.init.normal_(child.bias, 0.0, 0.1)
    module.train()
    image = photo("299x299")
    mean, std = ARCHITECTURES[arch].mean, ARCHITECTURES[arch].std
    module(((image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).repeat(2, 1, 1, 1))
    torch.save(module.state_dict(), path)


def conv_rate(dtype: torch.dtype = torch.float32, repeats: int = 12) -> tuple[float, float]:
    """This machine's dense 3x3 convolution rate in GFLOP/s: 256 channels, 96x128, the best layout, 2 threads.

    Twice: per second of wall-clock time, and per second of this process's CPU time (the rate the
    cores give while we hold them; on a shared machine the other processes' load changes the first).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, w = torch.randn(1, 256, 96, 128, dtype=dtype), (torch.randn(256, 256, 3, 3) * 0.02).to(dtype)
        flops = 2 * 256 * 256 * 9 * 96 * 128
        best_wall = best_cpu = 0.0
        for layout in (torch.contiguous_format, torch.channels_last):
            xx, ww = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
            for _ in range(3):
                F.conv2d(xx, ww, padding=1)
            walls, cpus = [], []
            for _ in range(repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                F.conv2d(xx, ww, padding=1)
                walls.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu_started)
            best_wall = max(best_wall, flops / statistics.median(walls) / 1e9)
            best_cpu = max(best_cpu, flops / statistics.median(cpus) / 1e9)
        return best_wall, best_cpu
    finally:
        torch.set_num_threads(threads)


def gradient_work(network, layer: str, shape: tuple[int, int], tile_size: int, cache: dict | None = None) -> float:
    """FLOPs of one gradient of an image of ``shape``: the forward pass to ``layer`` and the input gradient,
    tile by tile as the engine cuts it."""
    cache = {} if cache is None else cache
    total = 0.0
    rows, columns = tile_grid(*shape, tile_size)
    for y0, y1 in rows:
        for x0, x1 in columns:
            tile = (y1 - y0, x1 - x0)
            if tile not in cache:
                pixels = torch.rand(1, 3, *tile, requires_grad=True)
                with FlopCounterMode(display=False) as counter:
                    found = network.activations(pixels, [layer])
                    torch.autograd.grad(found[layer].square().mean(), pixels)
                cache[tile] = counter.get_total_flops()
            total += cache[tile]
    return total


def work_per_dream(network, layer: str, height: int, width: int, tile_size: int) -> float:
    """FLOPs of one dream: every iteration's gradient at every octave."""
    cache: dict = {}
    shapes = octave_shapes(height, width, OCTAVES, OCTAVE_SCALE)
    return sum(gradient_work(network, layer, shape, tile_size, cache) * ITERATIONS for shape in shapes)


def contender_child(name: str, network_name: str, layer: str, device: str, output: Path) -> None:
    """One contender in a process of its own (no heap or allocator settings shared); dreams once per
    line on stdin (the line is the size), answering with the seconds and leaving the image in ``output``."""
    network = load_network(network_name, device)
    objective = parse(layer, network.catalog)
    if name == "reference":
        # The reference hooks each stage's module; VGG's stages are slices of ``features`` that its
        # forward never calls, so it hooks the slice's last module (the ReLU) instead.
        hooked = [Stage(s.info, s.run[-1] if isinstance(s.run, nn.Sequential) else s.run) for s in network.stages]
        gradient = reference_gradient(dataclasses.replace(network, stages=hooked), objective)
        how = "PyTorch operators (plain code), fp32"
    else:
        tile_size = int(name.removeprefix("fast-tile")) if name.startswith("fast-tile") else None
        precision = "fp32" if name == "fast-fp32" else "auto"
        gradient = TiledGradient(network, objective, tile_size=tile_size, precision=precision)
        if name == "fast-nchw":
            gradient.channels_last = False
            network.module.to(memory_format=torch.contiguous_format)
        how = f"{gradient.kernel_path.describe()}, {gradient.dtype or 'fp32'}, tiles of {gradient.tile_size} px"
    for line in sys.stdin:
        image = photo(line.strip()).to(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        out = deep_dream(
            image, gradient, octaves=OCTAVES, octave_scale=OCTAVE_SCALE, iterations=ITERATIONS,
            step=STEP, jitter=JITTER, seed=SEED,
        )  # fmt: skip
        if out.device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        torch.save(out.cpu(), output)
        answer = {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb(), "how": how}
        print(json.dumps(answer), flush=True)


class ClassicContender(ContenderProcess):
    def __init__(self, name: str, network: str, layer: str, device: str, output: Path) -> None:
        arguments = ["--network", network, "--layer", layer, "--device", device]
        super().__init__(__file__, name, output, arguments, CONTENDER_ENV.get(name, {}))

    def dream(self, size: str) -> tuple[float, float, torch.Tensor]:
        answer = self.ask(size)
        self.how = answer["how"]
        return answer["seconds"], answer["cpu_seconds"], torch.load(self.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="googlenet", choices=[*LAYERS, "lite0"])
    parser.add_argument("--layer", help="default: inception_4c, conv4_3, mixed_6a, or lite0's default preset layer")
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup-size", help="size of the untimed first dream (default: --size); its smallest octave must fit"
    )
    parser.add_argument("--contenders", default="reference,fast,fast-unrewritten,fast-fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contender-child", nargs=2, metavar=("NAME", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    layer = args.layer or LAYERS.get(args.network) or preset_objective(get_preset("default"), "lite0", [])
    if args.contender_child:
        name, output = args.contender_child
        contender_child(name, args.network, layer, args.device, Path(output))
        return

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DREAMCORE_CACHE"] = str(Path(scratch) / "cache")  # the children inherit it
        if args.network != "lite0":
            checkpoint = Path(scratch) / f"random-{args.network}.pth"
            random_checkpoint(args.network, checkpoint)
            import_weights(checkpoint, as_network=args.network)  # as `dreamcore models import --as` does
        run(args, layer, device, Path(scratch))


def run(args: argparse.Namespace, layer: str, device: torch.device, scratch: Path) -> None:
    onednn = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    print(
        f"CPU {cpu_model() or 'unknown'}; PyTorch runs {torch.backends.cpu.get_cpu_capability()} code; "
        f"oneDNN {onednn.group(1) if onednn else 'unknown'}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    width, height = (int(v) for v in args.size.split("x"))
    network = load_network(args.network, "cpu")  # unprepared: the work is the plain network's
    tile_size = default_tile_size(device)
    work = work_per_dream(network, layer, height, width, tile_size)
    engine_dtype = autocast_dtype(device, "auto")
    print(
        f"{args.network} -> {network.catalog.resolve(layer).name}, {args.size}, {OCTAVES} octaves x {OCTAVE_SCALE} x "
        f"{ITERATIONS} iterations; work per dream {work / 1e9:,.0f} GFLOP (forward + input gradient, "
        f"{tile_size} px tiles); the engine runs {engine_dtype or 'fp32'} here"
    )
    # Limits in wall-clock seconds (at the rate measured now) and in CPU seconds of this process.
    wall_rate, cpu_rate = conv_rate()
    limit, cpu_limit = work / (wall_rate * 1e9), work / (cpu_rate * 1e9)
    print(
        f"dense 3x3 conv rate (256 ch, 96x128, 2 threads, fp32): {wall_rate:.0f} GFLOP/s -> limit {limit:.1f} s; "
        f"{cpu_rate:.0f} GFLOP per CPU second -> limit {cpu_limit:.1f} CPU s"
    )
    if engine_dtype is not None and device.type == "cpu":
        reduced_wall, reduced_cpu = conv_rate(engine_dtype)
        print(
            f"  the same convolution in {str(engine_dtype).removeprefix('torch.')}: {reduced_wall:.0f} GFLOP/s "
            f"-> limit {work / (reduced_wall * 1e9):.1f} s, {work / (reduced_cpu * 1e9):.1f} CPU s at that precision"
        )

    names = [name for name in args.contenders.split(",") if name]
    if engine_dtype is None and "fast-fp32" in names:
        names.remove("fast-fp32")  # the same as "fast"
    print("each in a process of its own, taking turns:")
    for name in names:
        print(f"  {name:>16}: {CONTENDERS[re.sub(r'tile[0-9]+$', 'tileN', name)]}")
    processes = {
        name: ClassicContender(name, args.network, layer, args.device, scratch / f"{name}.pt") for name in names
    }
    for process in processes.values():
        process.dream(args.warmup_size or args.size)  # untimed: preparation, kernel choice, allocator growth
    for name, process in processes.items():
        print(f"  {name:>16}: {process.how}")
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, torch.Tensor] = {}
    for round_number in range(args.rounds):
        for name in names if round_number % 2 == 0 else names[::-1]:
            seconds, cpu_seconds, outputs[name] = processes[name].dream(args.size)
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
        print(
            f"  round {round_number + 1}: "
            + ", ".join(f"{n} {times[n][-1]:.2f} s ({cpu_times[n][-1]:.1f} CPU s)" for n in names),
            flush=True,
        )
    for process in processes.values():
        process.close()

    def quarter(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image.float(), scale_factor=0.25, mode="area")

    def same_round(slow: list[float], fast: list[float]) -> str:
        ratios = [a / b for a, b in zip(slow, fast, strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    print(
        f"{'':>18}{'wall s':>8}{'x limit':>8}{'CPU s':>8}{'x limit':>8}"
        f"{'over reference: wall':>24}{'CPU':>20}{'SSIM 1/4':>10}{'peak RSS':>10}"
    )
    for name in names:
        wall, cpu = statistics.median(times[name]), statistics.median(cpu_times[name])
        has_reference = "reference" in times
        speed_up = same_round(times["reference"], times[name]) if has_reference else "-"
        cpu_speed_up = same_round(cpu_times["reference"], cpu_times[name]) if has_reference else "-"
        similar = ssim(quarter(outputs[name]), quarter(outputs["reference"])) if "reference" in outputs else 1.0
        print(
            f"  {name:>16}{wall:>8.1f}{wall / limit:>8.2f}{cpu:>8.1f}{cpu / cpu_limit:>8.2f}"
            f"{speed_up:>24}{cpu_speed_up:>20}{similar:>10.3f}{processes[name].peak_rss_mb:>7.0f} MB"
        )
    if "fast" in times and "fast-unrewritten" in times:
        print(
            "the rewrites' speed-up (fast-unrewritten / fast, same-round median): "
            f"wall {same_round(times['fast-unrewritten'], times['fast'])}, "
            f"CPU {same_round(cpu_times['fast-unrewritten'], cpu_times['fast'])}"
        )
    wall_rate, cpu_rate = conv_rate()
    print(
        f"the conv rate again, after the dreams: {wall_rate:.0f} GFLOP/s, {cpu_rate:.0f} per CPU second "
        f"(the machine's noise); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
