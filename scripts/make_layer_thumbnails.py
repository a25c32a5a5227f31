#!/usr/bin/env python3
"""Make the layer pictures of the web page's layer picker: one small sample dreamed at every layer.

    .venv/bin/python scripts/make_layer_thumbnails.py            # lite0, into bot/adapters/web/static/layers/lite0/
    .venv/bin/python scripts/make_layer_thumbnails.py --network lite1 --side 96

The outputs are committed (the package ships them), so run this again only when a network's layers or the
render loop change. The seed is fixed, so a run on the same machine repeats its pictures.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from dreamcore import DreamSettings, dream  # noqa: E402
from dreamcore.networks import layer_catalog  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "chelsea.png"
STATIC = ROOT / "bot" / "adapters" / "web" / "static" / "layers"


def thumbnail(sample: Image.Image, network: str, layer: str, args: argparse.Namespace) -> bytes:
    settings = DreamSettings.from_preset(
        "default",
        network=network,
        objective=layer,
        octaves=args.octaves,
        iterations=args.iterations,
        seed=args.seed,
        max_side=args.side,
        device="cpu",
    )
    result = dream(sample, settings)
    buffer = io.BytesIO()
    result.image.convert("RGB").save(buffer, "JPEG", quality=args.quality, optimize=True)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="lite0")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--side", type=int, default=128, help="longer side of each picture, in pixels")
    parser.add_argument("--octaves", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument(
        "--out", type=Path, default=None, help="folder (default: bot/adapters/web/static/layers/NETWORK)"
    )
    args = parser.parse_args(argv)

    out = args.out or STATIC / args.network
    out.mkdir(parents=True, exist_ok=True)
    sample = Image.open(args.sample).convert("RGB")
    for layer in layer_catalog(args.network).layers:
        started = time.perf_counter()
        data = thumbnail(sample, args.network, layer.name, args)
        (out / f"{layer.name}.jpg").write_bytes(data)
        print(f"{layer.name:>10}: {len(data) / 1024:4.1f} KB in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
