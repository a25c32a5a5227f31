"""Class pictures: are they recognisable to *another* network, and how long do they take?

    python benchmarks/class_pictures.py                      # 50 classes, default settings (512x512)
    python benchmarks/class_pictures.py --classes 10 --size 256 --save /tmp/pictures

Each class picture is made with one network (lite0) and judged by a different one (lite2), top-5:
a picture that fools only its maker is an adversarial pattern, not a picture. The classes are evenly
spaced over ImageNet's 1000 (every 20th), so the figure is not a hand-picked one. Also prints the time
of one 512x512 class picture and the share of it spent outside the network (parameterisation,
transforms, optimiser), and the time of a 48-frame 512x512 zoom animation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dreamcore.devices import uses_channels_last
from dreamcore.drawing import DrawSettings, visualize
from dreamcore.images import to_tensor
from dreamcore.networks import load_network
from dreamcore.settings import DreamSettings


def judge_top5(judge, image) -> list[str]:
    side = judge.native_size
    tensor = F.interpolate(to_tensor(image).to(judge.device), size=(side, side), mode="bilinear", antialias=True)
    return [label for label, _ in judge.classify(tensor, top=5)[0]]


def network_only_seconds(settings: DrawSettings) -> float:
    """Forward and backward passes alone, as many and as large as one class picture makes."""
    network = load_network(settings.network, settings.device)
    side = network.native_size
    views = torch.rand(settings.views, 3, side, side, device=network.device)
    if uses_channels_last(network.device):
        views = views.contiguous(memory_format=torch.channels_last)
    started = time.perf_counter()
    for _ in range(settings.steps):
        views.requires_grad_(True)
        logits = network.activations(views, ["logits"])["logits"]
        torch.autograd.grad(logits[:, 1].mean(), views)
        views = views.detach()
    float(views.sum())  # waits for a GPU to finish
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--maker", default="lite0")
    parser.add_argument("--judge", default="lite2")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--skip-zoom", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (the target's machine), cuda or mps")
    args = parser.parse_args()

    settings = DrawSettings(network=args.maker, width=args.size, height=args.size, seed=0, device=args.device)
    if args.steps:
        settings = settings.replace(steps=args.steps)
    judge = load_network(args.judge, args.device)
    indices = [round(i * 1000 / args.classes) for i in range(args.classes)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; made with {args.maker} at "
        f"{args.size}x{args.size}, {settings.steps} steps, {settings.octaves} octaves; judged by {args.judge}, top-5"
    )
    hits, seconds = 0, []
    for number, index in enumerate(indices, start=1):
        result = visualize(index, settings)
        seconds.append(result.seconds)
        name = result.params["classes"][0]
        top5 = judge_top5(judge, result.image)
        hit = judge.labels[index] in top5
        hits += hit
        print(
            f"  {number:>2}/{len(indices)} {'hit ' if hit else 'miss'} {name:<28} {result.seconds:5.1f}s  "
            f"judge: {', '.join(top5[:3])}",
            flush=True,
        )
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            result.image.save(args.save / f"{index:03d}-{name.replace(' ', '_').replace('/', '_')}.png")
    print(f"hit rate: {hits}/{len(indices)} = {hits / len(indices):.0%} (target at least 80%)")
    print(f"time per class picture: {statistics.median(seconds):.1f} s median")

    timed = settings.replace(width=512, height=512)
    started = time.perf_counter()
    visualize("banana", timed)
    total = time.perf_counter() - started
    inside = network_only_seconds(timed)
    print(
        f"one 512x512 class picture: {total:.1f} s; the network's own passes alone take {inside:.1f} s, "
        f"so {max(0.0, total - inside) / total:.0%} is spent outside the network"
    )

    if not args.skip_zoom:
        from dreamcore.zoom import ZoomSettings, zoom

        photo = to_tensor_image_512()
        started = time.perf_counter()
        zoom(photo, ZoomSettings(frames=48, size=512, dream=DreamSettings(device=args.device)))
        print(f"48-frame 512x512 zoom: {time.perf_counter() - started:.1f} s")


def to_tensor_image_512():
    from PIL import Image

    path = Path(__file__).resolve().parent.parent / "tests" / "data" / "coffee.png"
    return Image.open(path).convert("RGB").resize((512, 512), Image.LANCZOS)


if __name__ == "__main__":
    main()
