"""The ``dreamcore`` command: dream photos, list layers and networks, make layer atlases.

Errors come out as one sentence on stderr with a meaningful exit code (see dreamcore.errors), never
as a traceback, unless --debug is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dreamcore import __version__
from dreamcore.api import dream
from dreamcore.atlas import ATLAS_DEFAULTS, layer_atlas
from dreamcore.classes import parse_class_list, search_classes
from dreamcore.drawing import (
    MIX_LAYOUTS,
    DrawSettings,
    PictureResult,
    draw_path,
    fill_mask,
    letters,
    mix,
    visualize,
)
from dreamcore.errors import DreamError, UsageError
from dreamcore.images import load_image, output_format, read_metadata, save_image
from dreamcore.networks import import_weights, layer_catalog, list_networks, load_network
from dreamcore.render import Step
from dreamcore.settings import PRESETS, DreamSettings, get_preset
from dreamcore.shapes import PATH_SHAPES

log = logging.getLogger("dreamcore")

EXIT_UNEXPECTED = 70


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def add_dream_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that dreams; None means "the preset decides"."""
    group = parser.add_argument_group("dream options (defaults come from the preset)")
    group.add_argument("-n", "--network", help="network to dream with (see `dreamcore models`); default lite0")
    group.add_argument("-p", "--preset", help=f"named look: {', '.join(PRESETS)} (default: default)")
    group.add_argument(
        "-l",
        "--layer",
        action="append",
        metavar="SPEC",
        help="layer to maximise, repeatable; SPEC may carry channels and a weight: block9, block9:3,7, 0.5*block12",
    )
    group.add_argument("--channels", help="comma-separated channels of the (single) --layer to maximise")
    group.add_argument("--octaves", type=positive_int)
    group.add_argument("--octave-scale", type=float, help="size ratio between octaves (e.g. 1.4)")
    group.add_argument("-i", "--iterations", type=positive_int, help="gradient steps per octave")
    group.add_argument("--step", type=float, help="step size per iteration (e.g. 0.008)")
    group.add_argument("--jitter", type=int, help="random shift in pixels before each step")
    group.add_argument(
        "--tile-size",
        type=positive_int,
        metavar="SIZE",
        help="gradients are computed in tiles of at most SIZE x SIZE pixels",
    )
    group.add_argument("--seed", type=int, help="makes a run repeatable")
    group.add_argument("--max-side", type=positive_int, help="scale the photo down to this longer side first")
    group.add_argument("--max-loss", type=float, help="stop an octave early once the loss passes this")
    group.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="auto uses bf16/fp16 where fast")
    group.add_argument("--settings", type=Path, help="reproduce a result: its PNG, or a JSON file of settings")


def settings_from_args(args: argparse.Namespace) -> DreamSettings:
    base: dict[str, Any] = {}
    if args.settings:
        base = load_settings_file(args.settings)
    objective = None
    if args.layer:
        if args.channels:
            if len(args.layer) != 1 or ":" in args.layer[0]:
                raise UsageError("--channels goes with exactly one --layer that has no channels of its own.")
            args.layer[0] = f"{args.layer[0]}:{args.channels}"
        objective = "+".join(args.layer)
    elif args.channels:
        raise UsageError("--channels needs a --layer to pick the channels from.")
    overrides = {
        "network": args.network,
        "objective": objective,
        "octaves": args.octaves,
        "octave_scale": args.octave_scale,
        "iterations": args.iterations,
        "step": args.step,
        "jitter": args.jitter,
        "tile_size": args.tile_size,
        "seed": args.seed,
        "max_side": args.max_side,
        "max_loss": args.max_loss,
        "device": args.device,
        "precision": args.precision,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    if base:
        if args.preset:
            base["preset"] = get_preset(args.preset).name
        return DreamSettings.from_dict({**base, **given})
    return DreamSettings.from_preset(args.preset or "default", **given)


def read_any_metadata(path: Path) -> dict | None:
    """Settings stored in a still (PNG, JPEG, WebP) or an animation (GIF, WebP, MP4)."""
    if path.suffix.lower() == ".mp4":
        from dreamcore.animation import read_animation_metadata

        return read_animation_metadata(path)
    return read_metadata(path)


def load_settings_file(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"Could not read settings from {path}: {error}.") from error
    else:
        data = read_any_metadata(path)
        if data is None:
            raise UsageError(f"{path} holds no dreamcore settings; pass a result made by dreamcore or a JSON file.")
    settings = data.get("settings", data) if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        raise UsageError(f"{path} does not hold dreamcore settings (a JSON object of settings).")
    settings.pop("device", None)  # reproduce on whatever this machine has
    if isinstance(data, dict) and data.get("guide"):
        settings["extra"] = {**settings.get("extra", {}), "guide": data["guide"]}
    return settings


class ProgressBar:
    """A tqdm bar over all steps of a render (or of several), created at the first step."""

    def __init__(self, enabled: bool, description: str = "dreaming") -> None:
        self.enabled = enabled
        self.description = description
        self.bar: tqdm | None = None

    def update(self, done: int, total: int, note: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="step", leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(note, refresh=False)
        self.bar.refresh()

    def __call__(self, step: Step) -> None:
        done = (step.octave - 1) * step.iterations + step.iteration
        self.update(done, step.octaves * step.iterations, f"octave {step.octave}/{step.octaves} loss {step.loss:.3g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def command_dream(args: argparse.Namespace) -> int:
    output_format(args.output)
    settings = settings_from_args(args)
    guided_by = settings.extra.get("guide")
    if settings.guide_layer and not args.guide:
        raise UsageError(
            f"These settings dreamed toward a guide image ({guided_by or 'not recorded'}); "
            "pass it again with --guide FILE to make the same dream."
        )
    bar = ProgressBar(not args.quiet)
    try:
        result = dream(args.input, settings, guide=args.guide, on_step=bar)
    finally:
        bar.close()
    metadata = result.metadata()
    if args.guide:
        metadata["guide"] = str(args.guide)
    path = save_image(result.image, args.output, metadata)
    if args.print_settings:
        print(json.dumps(result.settings.to_dict(), indent=2, sort_keys=True))
        print(f"Computed with {result.kernels}.", file=sys.stderr)
    if not args.quiet:
        print(
            f"Wrote {path} ({result.image.width}x{result.image.height}, {result.settings.network} "
            f"{result.settings.objective}, seed {result.settings.seed}) in {result.seconds:.1f} s.",
            file=sys.stderr,
        )
    return 0


def command_atlas(args: argparse.Namespace) -> int:
    output_format(args.output)
    settings = settings_from_args(args)
    if not any(getattr(args, name) for name in ("octaves", "iterations", "step", "settings")):
        settings = settings.replace(**ATLAS_DEFAULTS)
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else None
    bar = ProgressBar(not args.quiet, "atlas")

    def report(cell: int, cells: int, step: Step) -> None:
        per_cell = step.octaves * step.iterations
        done = cell * per_cell + (step.octave - 1) * step.iterations + step.iteration
        bar.update(done, cells * per_cell, f"layer {cell + 1}/{cells}")

    try:
        sheet, results = layer_atlas(
            args.input, settings, layers=layers, cell_side=args.cell_size, columns=args.columns, on_step=report
        )
    finally:
        bar.close()
    metadata = {
        "dreamcore": 1,
        "atlas": [r.settings.objective for r in results],
        "settings": results[0].settings.to_dict(),
    }
    path = save_image(sheet, args.output, metadata)
    if not args.quiet:
        print(f"Wrote {path}: {len(results)} layers of {results[0].settings.network}.", file=sys.stderr)
    return 0


def command_zoom(args: argparse.Namespace) -> int:
    import itertools

    from dreamcore.animation import animation_format, parse_size, save_animation
    from dreamcore.zoom import ZoomSettings, zoom

    animation_format(args.output)  # a wrong suffix or a missing MP4 encoder must fail before minutes of dreaming
    max_bytes = parse_size(args.max_bytes) if args.max_bytes is not None else None
    stored = read_any_metadata(args.settings) if args.settings and args.settings.suffix.lower() != ".json" else None
    stored_zoom = stored.get("zoom", {}) if isinstance(stored, dict) and isinstance(stored.get("zoom"), dict) else {}
    dream_settings = settings_from_args(args)
    given = {
        "frames": args.frames,
        "zoom": args.zoom,
        "rotate": args.rotate,
        "fps": args.fps,
        "size": args.size,
        "frame_octaves": args.frame_octaves,
        "frame_iterations": args.frame_iterations,
    }
    values = {**stored_zoom, **{key: value for key, value in given.items() if value is not None}}
    if "frames" not in values:
        raise UsageError("Say how many frames to make with --frames N; 48 frames play for 4 seconds at 12 fps.")
    settings = ZoomSettings.from_dict({**values, "dream": dream_settings})

    # One bar over every step of every frame; the first frame takes more steps than the rest.
    starts = list(itertools.accumulate((settings.frame_steps(i) for i in range(settings.frames)), initial=0))
    bar = ProgressBar(not args.quiet, "zooming")

    def report(index: int, frames: int, step: Step | None) -> None:
        if step is None:  # the frame is finished
            done = starts[index + 1]
        else:
            done = starts[index] + (step.octave - 1) * step.iterations + step.iteration
        bar.update(done, starts[-1], f"frame {index + 1}/{frames}")

    try:
        result = zoom(args.input, settings, on_frame=report)
    finally:
        bar.close()
    path = save_animation(result.frames, args.output, settings.fps, max_bytes=max_bytes, metadata=result.metadata())
    if not args.quiet:
        width, height = result.frames[0].size
        print(
            f"Wrote {path} ({len(result.frames)} frames dreamed at {width}x{height}, {settings.fps} fps; "
            f"{path.stat().st_size:,} bytes; seed {result.settings.dream.seed}) in {result.seconds:.1f} s.",
            file=sys.stderr,
        )
    return 0


def add_draw_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that draw from nothing."""
    group = parser.add_argument_group("drawing options")
    group.add_argument("-n", "--network", default="lite0", help="network to draw with (default lite0)")
    group.add_argument("--size", default="512x512", help="WIDTHxHEIGHT of the picture, or one number (default 512)")
    group.add_argument("--steps", type=positive_int, help="optimisation steps in all (default 256)")
    group.add_argument("--octaves", type=positive_int, help="drawn small first, then refined (default 2)")
    group.add_argument("--learning-rate", type=float, help="Adam's step size (default 0.08)")
    group.add_argument("--views", type=positive_int, help="random views of each region per step (default 2)")
    group.add_argument("--background", type=float, help="grey outside masks, 0 black .. 1 white (default 0.5)")
    group.add_argument("--seed", type=int, help="makes a picture repeatable")
    group.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])


def draw_settings_from_args(args: argparse.Namespace) -> DrawSettings:
    try:
        width, height = (int(v) for v in args.size.lower().split("x")) if "x" in args.size else (int(args.size),) * 2
    except ValueError:
        raise UsageError(
            f"Could not read the size {args.size!r}; write WIDTHxHEIGHT (e.g. 768x512) or one number."
        ) from None
    given = {
        "network": args.network,
        "width": width,
        "height": height,
        "steps": args.steps,
        "octaves": args.octaves,
        "learning_rate": args.learning_rate,
        "views": args.views,
        "background": args.background,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
    }
    return DrawSettings(**{key: value for key, value in given.items() if value is not None})


def finish_drawing(args: argparse.Namespace, make: Callable[..., PictureResult]) -> int:
    """Run one drawing with a progress bar, save it with its settings, and say where it went."""
    output_format(args.output)
    settings = draw_settings_from_args(args)
    bar = ProgressBar(not args.quiet, "drawing")
    try:
        result = make(settings, bar)
    finally:
        bar.close()
    path = save_image(result.image, args.output, result.metadata())
    if not args.quiet:
        print(
            f"Wrote {path} ({result.mode}: {', '.join(result.params['classes'])}; seed {result.settings.seed}) "
            f"in {result.seconds:.1f} s.",
            file=sys.stderr,
        )
    return 0


def command_visualize(args: argparse.Namespace) -> int:
    photo = load_image(args.photo, max_side=4096) if args.photo else None
    return finish_drawing(args, lambda settings, bar: visualize(args.target, settings, photo=photo, on_step=bar))


def command_mix(args: argparse.Namespace) -> int:
    targets = args.targets
    if len(targets) == 1:  # "gorilla and french horn" as one argument
        targets = [label.index for label in parse_class_list(targets[0])]
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    photo = load_image(args.photo, max_side=4096) if args.photo else None
    return finish_drawing(
        args, lambda settings, bar: mix(targets, args.layout, weights, settings, photo=photo, on_step=bar)
    )


def command_path(args: argparse.Namespace) -> int:
    shape = args.points or args.shape
    return finish_drawing(
        args,
        lambda settings, bar: draw_path(args.target, shape, settings, count=args.count, brush=args.brush, on_step=bar),
    )


def command_letters(args: argparse.Namespace) -> int:
    overrides = {}
    for pair in args.letter or []:
        letter, _, name = pair.partition("=")
        if not name:
            raise UsageError(f"Write --letter as LETTER=CLASS (e.g. A=apple), not {pair!r}.")
        overrides[letter.strip()] = name.strip()
    return finish_drawing(
        args,
        lambda settings, bar: letters(args.text, settings, target=args.target, overrides=overrides, on_step=bar),
    )


def command_mask(args: argparse.Namespace) -> int:
    return finish_drawing(args, lambda settings, bar: fill_mask(args.target, args.mask, settings, on_step=bar))


def command_classes(args: argparse.Namespace) -> int:
    labels = load_network(args.network, "cpu").labels if args.network != "lite0" else None
    for label in search_classes(args.query or "", labels, limit=args.limit):
        synonyms = [s for s in label.synonyms if s != label.name][:3]
        print(f"  {label.index:>4}  {label.name}" + (f"  ({', '.join(synonyms)})" if synonyms else ""))
    return 0


def command_layers(args: argparse.Namespace) -> int:
    catalog = layer_catalog(args.network)
    if args.json:
        print(json.dumps([layer.__dict__ | {"aliases": list(layer.aliases)} for layer in catalog], indent=2))
        return 0
    print(f"Layers of {catalog.network}, from shallow to deep (use with --layer NAME or NAME:CHANNELS):")
    width = max(len(layer.name) for layer in catalog)
    for layer in catalog:
        aliases = f" (also {', '.join(layer.aliases)})" if layer.aliases else ""
        print(f"  {layer.name:<{width}}  {layer.channels:>5} ch  1/{layer.stride:<3} {layer.description}{aliases}")
    return 0


def command_models(args: argparse.Namespace) -> int:
    if args.action == "import":
        spec = import_weights(args.file, as_network=args.as_network, name=args.name, labels=args.labels)
        print(f"Installed {args.file} as network {spec.name!r}; dream with `dreamcore dream IN -o OUT -n {spec.name}`.")
        return 0
    print("Networks (* = available offline now):")
    for spec in list_networks():
        available = spec.weights.is_available()
        print(f"  {'*' if available else ' '} {spec.name:<14} {spec.description}")
    print(
        "Others download on first use; offline, put the file where the error message says, or run "
        "`dreamcore models import FILE`."
    )
    from dreamcore.kernel_choice import measured_choices
    from dreamcore.native import native_setting

    setting = native_setting()
    if setting != "auto":
        print(
            f"CPU kernels: DREAMCORE_NATIVE={'1' if setting == 'on' else '0'} forces the "
            f"{'native kernels' if setting == 'on' else 'PyTorch operators'} for every network."
        )
        return 0
    print("CPU kernels on this machine (the faster path, measured on each network's first fp32 dream):")
    choices = measured_choices()
    for name, choice in sorted(choices.items()):
        print(f"  {name:<14} {choice.describe()}")
    if not choices:
        print("  none measured yet")
    print("  DREAMCORE_NATIVE=1 or 0 forces the native kernels or PyTorch's operators.")
    return 0


def command_presets(_args: argparse.Namespace) -> int:
    for preset in PRESETS.values():
        values = ", ".join(f"{k} {v}" for k, v in preset.values.items())
        print(f"  {preset.name:<10} {preset.description} ({values}; lite0 layer {preset.layers['lite0']})")
    return 0


def command_settings(args: argparse.Namespace) -> int:
    data = read_any_metadata(args.file)
    if data is None:
        raise UsageError(f"{args.file} holds no dreamcore settings.")
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def command_classify(args: argparse.Namespace) -> int:
    from dreamcore.images import load_image, to_tensor

    network = load_network(args.network or "lite0", args.device or "auto")
    image = load_image(args.input).rgb.resize((network.native_size, network.native_size))
    for label, probability in network.classify(to_tensor(image), top=min(args.top, len(network.labels)))[0]:
        print(f"{probability:6.1%}  {label}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamcore",
        description="DeepDream from the command line: dream photos, draw what a network sees, make zoom animations.",
    )
    parser.add_argument("--version", action="version", version=f"dreamcore {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dream_parser = commands.add_parser("dream", parents=[common], help="dream a photo", description="Dream a photo.")
    dream_parser.add_argument("input", help="photo to dream (PNG, JPEG, WebP, GIF, ...)")
    dream_parser.add_argument("-o", "--output", required=True, type=Path, help="where to write (.png, .jpg, .webp)")
    dream_parser.add_argument("--guide", help="dream toward the features of this image")
    dream_parser.add_argument("--print-settings", action="store_true", help="print the settings used as JSON")
    add_dream_options(dream_parser)
    dream_parser.set_defaults(run=command_dream)

    atlas_parser = commands.add_parser(
        "atlas", parents=[common], help="one photo dreamed at a row of layers, on one sheet"
    )
    atlas_parser.add_argument("input")
    atlas_parser.add_argument("-o", "--output", required=True, type=Path)
    atlas_parser.add_argument("--layers", help="comma-separated layers (default: eight from shallow to deep)")
    atlas_parser.add_argument("--cell-size", type=positive_int, default=256, help="longer side of each picture")
    atlas_parser.add_argument("--columns", type=positive_int)
    add_dream_options(atlas_parser)
    atlas_parser.set_defaults(run=command_atlas)

    zoom_parser = commands.add_parser(
        "zoom",
        parents=[common],
        help="the endless zoom: dream, zoom in, dream again (GIF, WebP or MP4)",
        description=(
            "Dream a photo, zoom into its centre a little, dream again, frame after frame, as in the original "
            "DeepDream notebook. The dream options set the first frame; later frames take --frame-octaves and "
            "--frame-iterations."
        ),
    )
    zoom_parser.add_argument("input", help="photo to start from")
    zoom_parser.add_argument("-o", "--output", required=True, type=Path, help="where to write (.gif, .webp or .mp4)")
    zoom_parser.add_argument(
        "--frames", type=int, metavar="N", help="how many frames, 1 to 600 (48 play for 4 s at 12 fps)"
    )
    zoom_parser.add_argument("--zoom", type=float, metavar="FACTOR", help="scale per frame, 1 to 1.5 (default 1.05)")
    zoom_parser.add_argument(
        "--rotate", type=float, metavar="DEGREES", help="degrees to turn per frame, counter-clockwise (default 0)"
    )
    zoom_parser.add_argument("--fps", type=int, help="frames per second, 1 to 60 (default 12)")
    zoom_parser.add_argument(
        "--size", type=int, metavar="PIXELS", help="longer side of the frames in pixels (default 512)"
    )
    zoom_parser.add_argument(
        "--frame-octaves", type=int, metavar="N", help="octaves of each frame after the first (default 3)"
    )
    zoom_parser.add_argument(
        "--frame-iterations", type=int, metavar="N", help="steps per octave after the first frame (default 5)"
    )
    zoom_parser.add_argument(
        "--max-bytes", metavar="SIZE", help="shrink the file until it fits, e.g. 10MiB (Discord) or 5MB (X)"
    )
    add_dream_options(zoom_parser)
    zoom_parser.set_defaults(run=command_zoom)

    visualize_parser = commands.add_parser(
        "visualize", parents=[common], help="what the network thinks a class looks like (e.g. banana)"
    )
    visualize_parser.add_argument("target", help="class name or number (see `dreamcore classes QUERY`)")
    visualize_parser.add_argument("-o", "--output", required=True, type=Path)
    visualize_parser.add_argument("--photo", help="dream the class into this photo instead of drawing from nothing")
    add_draw_options(visualize_parser)
    visualize_parser.set_defaults(run=command_visualize)

    mix_parser = commands.add_parser("mix", parents=[common], help="several classes in one picture")
    mix_parser.add_argument("targets", nargs="+", help='classes, e.g. gorilla "french horn" (or "gorilla and horn")')
    mix_parser.add_argument("-o", "--output", required=True, type=Path)
    mix_parser.add_argument("--layout", choices=MIX_LAYOUTS, default="side", help="side by side, above, or blend")
    mix_parser.add_argument("--weights", help="comma-separated weights, one per class (e.g. 1,0.5)")
    mix_parser.add_argument("--photo", help="dream the classes into this photo")
    add_draw_options(mix_parser)
    mix_parser.set_defaults(run=command_mix)

    path_parser = commands.add_parser("path", parents=[common], help="draw a class along a line, circle, spiral...")
    path_parser.add_argument("target")
    path_parser.add_argument("-o", "--output", required=True, type=Path)
    path_parser.add_argument("--shape", choices=PATH_SHAPES, default="circle")
    path_parser.add_argument("--points", help='your own path: "x,y x,y ..." in pixels or fractions (0.2,0.5)')
    path_parser.add_argument("--count", type=positive_int, default=12, help="points along the shape (density)")
    path_parser.add_argument("--brush", type=float, default=0.3, help="window size as a fraction of the canvas")
    add_draw_options(path_parser)
    path_parser.set_defaults(run=command_path)

    letters_parser = commands.add_parser(
        "letters", parents=[common], help="text whose letters are filled with animals and things"
    )
    letters_parser.add_argument("text")
    letters_parser.add_argument("-o", "--output", required=True, type=Path)
    letters_parser.add_argument("--class", dest="target", help="fill every letter with this class")
    letters_parser.add_argument(
        "--letter", action="append", metavar="L=CLASS", help="alphabet mode: choose a letter's class (repeatable)"
    )
    add_draw_options(letters_parser)
    letters_parser.set_defaults(run=command_letters)

    mask_parser = commands.add_parser("mask", parents=[common], help="a class drawn inside your black-and-white mask")
    mask_parser.add_argument("target")
    mask_parser.add_argument("mask", help="white is drawn, black stays background; same proportions as --size")
    mask_parser.add_argument("-o", "--output", required=True, type=Path)
    add_draw_options(mask_parser)
    mask_parser.set_defaults(run=command_mask)

    classes_parser = commands.add_parser("classes", parents=[common], help="find class names to draw")
    classes_parser.add_argument("query", nargs="?", help="part of a name, e.g. shark")
    classes_parser.add_argument("-n", "--network", default="lite0")
    classes_parser.add_argument("--limit", type=positive_int, default=25)
    classes_parser.set_defaults(run=command_classes)

    layers_parser = commands.add_parser("layers", parents=[common], help="list a network's layers")
    layers_parser.add_argument("network", nargs="?", default="lite0")
    layers_parser.add_argument("--json", action="store_true")
    layers_parser.set_defaults(run=command_layers)

    models_parser = commands.add_parser("models", parents=[common], help="list networks, or import a weights file")
    models_parser.add_argument("action", nargs="?", choices=["list", "import"], default="list")
    models_parser.add_argument("file", nargs="?", type=Path, help="with import: the .pth file")
    models_parser.add_argument("--as", dest="as_network", help="with import: install as this built-in network")
    models_parser.add_argument("--name", help="with import: name for your own network")
    models_parser.add_argument("--labels", type=Path, help="with import: labels file, one class per line")
    models_parser.set_defaults(run=command_models)

    commands.add_parser("presets", parents=[common], help="list the named looks").set_defaults(run=command_presets)

    settings_parser = commands.add_parser("settings", parents=[common], help="print the settings stored in a result")
    settings_parser.add_argument("file", type=Path)
    settings_parser.set_defaults(run=command_settings)

    classify_parser = commands.add_parser(
        "classify", parents=[common], help="what the network sees in a photo (top classes)"
    )
    classify_parser.add_argument("input")
    classify_parser.add_argument("-n", "--network")
    classify_parser.add_argument("--device")
    classify_parser.add_argument("--top", type=positive_int, default=5)
    classify_parser.set_defaults(run=command_classify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "models" and args.action == "import" and not args.file:
        parser.error("models import needs a FILE")
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except DreamError as error:
        if args.debug:
            raise
        print(f"dreamcore: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("dreamcore: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error worth a message.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        if args.debug:
            raise
        print(
            f"dreamcore: unexpected error: {error!r}. Run again with --debug for details, and please report it.",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
