"""Where a classic network's gradient time goes (torch.profiler), against the machine's limit for it.

    python benchmarks/classic_profile.py --network googlenet     # one 1024x768 engine gradient
    python benchmarks/classic_profile.py --network vgg16 --size 512x384

Random weights as in classic_speed.py (timing does not depend on the values). Prints the top
operators by their own CPU time, the gradient's FLOPs and what they would take at the measured
dense convolution rate, in fp32 and in the precision the engine picked.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classic_speed import LAYERS, conv_rate, gradient_work, photo, random_checkpoint

from dreamcore.gradients import TiledGradient
from dreamcore.networks import import_weights, load_network
from dreamcore.objectives import parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="googlenet", choices=list(LAYERS))
    parser.add_argument("--layer")
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rows", type=int, default=14)
    args = parser.parse_args()
    layer = args.layer or LAYERS[args.network]
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DREAMCORE_CACHE"] = scratch
        random_checkpoint(args.network, Path(scratch) / "random.pth")
        import_weights(Path(scratch) / "random.pth", as_network=args.network)
        network = load_network(args.network, "cpu")
        width, height = (int(v) for v in args.size.split("x"))
        work = gradient_work(network, layer, (height, width), 512)  # before the engine rewrites it
        gradient = TiledGradient(network, parse(layer, network.catalog), precision=args.precision)
        image = photo(args.size)
        gradient(image)  # warm-up
        started = time.perf_counter()
        gradient(image)
        seconds = time.perf_counter() - started
        with profile() as profiler:
            gradient(image)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    fp32, _ = conv_rate()
    print(f"{args.network} -> {layer}, {args.size}, {gradient.dtype or 'fp32'}: one gradient {seconds:.2f} s")
    print(f"  work {work / 1e9:.1f} GFLOP; conv rate fp32 {fp32:.0f} GFLOP/s -> limit {work / fp32 / 1e9:.2f} s")
    if gradient.dtype is not None:
        rate, _ = conv_rate(gradient.dtype)
        print(f"  conv rate {gradient.dtype}: {rate:.0f} GFLOP/s -> limit {work / rate / 1e9:.2f} s at that precision")


if __name__ == "__main__":
    main()
