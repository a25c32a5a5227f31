"""Pictures from nothing: what the network thinks a banana is, and compositions built on that.

One loop (``draw_picture``) optimises a Fourier-parameterised picture with Adam so that chosen
*regions* of it, seen through random shifts, zooms and turns, score high for chosen classes. The
modes differ only in their regions:

- a class picture: one region, the whole canvas;
- a mix: one region per class, side by side or one above the other, or one region scoring them all;
- a path: a small window that moves along a line, circle, spiral or wave;
- letters: one region per letter, with pixels outside the letters held at the background.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from dreamcore.classes import ALPHABET, alphabet_class, find_class
from dreamcore.devices import autocast_dtype, precision_context, uses_channels_last
from dreamcore.errors import Cancelled, UsageError
from dreamcore.gradients import prepare_for_speed
from dreamcore.images import LoadedImage, to_image, to_tensor
from dreamcore.networks import Network, load_network
from dreamcore.parameterization import FourierImage
from dreamcore.render import Step
from dreamcore.settings import SettingsRecord, check_field_types, require
from dreamcore.shapes import (
    Point,
    boxes_of,
    check_points,
    image_mask,
    parse_points,
    path_points,
    split_weights,
    text_mask,
)
from dreamcore.transforms import RobustnessTransforms

MIX_LAYOUTS = ("side", "above", "blend")
# A fresh optimiser's first steps are large in every coefficient: at a refining octave that paints
# pixel-level speckle over the picture the coarser octave drew, so refine more gently.
REFINE_LEARNING_RATE = 0.5
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the canvas


@dataclass(frozen=True)
class DrawSettings(SettingsRecord):
    """How a picture from nothing is drawn (what is drawn comes with each mode's function)."""

    kind = "drawing setting"

    network: str = "lite0"
    width: int = 512
    height: int = 512
    steps: int = 256  # optimisation steps in all, shared among the octaves
    octaves: int = 2  # drawn at 1/2**(octaves-1) of the size first, then refined at each doubling
    learning_rate: float = 0.08  # clearer than 0.05; both were recognised 50/50 by another network
    views: int = 2  # randomly transformed looks at each region per step
    jitter: int = 16
    rotate: float = 10.0
    background: float = 0.5  # grey level outside masks, 0 black .. 1 white
    seed: int | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_field_types(self, optional={"seed"})

        require(32 <= self.width <= 4096 and 32 <= self.height <= 4096, "width and height must be 32 to 4096 pixels.")
        require(1 <= self.steps <= 5000, f"steps must be between 1 and 5000 (got {self.steps}).")
        require(1 <= self.octaves <= 4, f"octaves must be between 1 and 4 (got {self.octaves}).")
        require(self.steps >= self.octaves, "steps must be at least the number of octaves.")
        require(0 < self.learning_rate <= 1, "learning rate must be above 0 and at most 1.")
        require(1 <= self.views <= 16, "views must be between 1 and 16.")
        require(
            0 <= self.jitter <= 256 and 0 <= self.rotate <= 180, "jitter must be 0..256 px and rotate 0..180 degrees."
        )
        require(0 <= self.background <= 1, "background must be between 0 (black) and 1 (white).")


@dataclass(frozen=True)
class Region:
    """A part of the canvas and the classes (index, weight) it should show."""

    box: Box
    targets: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class PictureResult:
    image: Image.Image
    mode: str
    params: dict[str, Any]  # what was drawn: classes (resolved to names), layout, shape, text ...
    settings: DrawSettings  # resolved: the seed is filled in
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "dreamcore": 1,
            "mode": self.mode,
            "params": self.params,
            "settings": self.settings.to_dict(),
            "seconds": round(self.seconds, 3),
        }


# ----------------------------------------------------------------------------------------------- the loop


def draw_picture(
    network: Network,
    regions: Callable[[int], Sequence[Region]],
    settings: DrawSettings,
    *,
    start: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Optimise a picture so the regions that ``regions(step)`` names score high for their classes.

    ``start`` (1, 3, H, W) begins from a photo instead of faint noise; ``mask`` (1, 1, H, W) holds
    pixels outside it at the background grey. Returns (1, 3, height, width) in [0, 1].
    """
    rng = random.Random(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed or 0)
    sizes = octave_sizes(settings.width, settings.height, settings.octaves)
    steps_per_octave = split_steps(settings.steps, len(sizes))
    image = start
    steps_done = 0  # counted across octaves, so regions that take turns get them in every octave

    for octave, (height, width) in enumerate(sizes, start=1):
        picture = FourierImage(height, width, generator=generator, device=network.device)
        if image is not None:
            picture.set_image(image.to(network.device))
        rate = settings.learning_rate * (REFINE_LEARNING_RATE if octave > 1 else 1.0)
        optimiser = torch.optim.Adam(picture.parameters(), lr=rate)
        # Finer octaves also look at zoomed-in parts, which is where their extra detail goes.
        zoom = 1.0 + 0.6 * (octave - 1) / max(len(sizes) - 1, 1)
        transforms = RobustnessTransforms(jitter=settings.jitter, scale=(0.9, 1.1 * zoom), rotate=settings.rotate)
        octave_mask = None if mask is None else F.interpolate(mask.to(network.device), size=(height, width))
        for step in range(1, steps_per_octave[octave - 1] + 1):
            if should_stop is not None and should_stop():
                raise Cancelled()
            image = masked(picture(), octave_mask, settings.background)
            score = sum(
                region_score(network, image, region, transforms, settings, rng) for region in regions(steps_done + step)
            )
            optimiser.zero_grad()
            (-score).backward()
            optimiser.step()
            if on_step is not None:
                on_step(Step(octave, len(sizes), step, steps_per_octave[octave - 1], score.item(), image.detach()))
        steps_done += steps_per_octave[octave - 1]
        with torch.no_grad():
            image = masked(picture(), octave_mask, settings.background)
    return image.detach()


def region_score(
    network: Network,
    image: torch.Tensor,
    region: Region,
    transforms: RobustnessTransforms,
    settings: DrawSettings,
    rng: random.Random,
) -> torch.Tensor:
    """Mean weighted class score of ``settings.views`` random looks at one region."""
    height, width = image.shape[-2:]
    x0, y0, x1, y1 = region.box
    crop = image[
        :,
        :,
        round(y0 * height) : max(round(y1 * height), round(y0 * height) + 1),
        round(x0 * width) : max(round(x1 * width), round(x0 * width) + 1),
    ]
    side = network.native_size
    aspect = crop.shape[-1] / crop.shape[-2]
    out_size = (side, max(32, round(side * aspect))) if aspect >= 1 else (max(32, round(side / aspect)), side)
    views = transforms(crop.expand(settings.views, -1, -1, -1), rng, out_size=out_size)
    if uses_channels_last(network.device):
        views = views.contiguous(memory_format=torch.channels_last)
    with precision_context(network.device, autocast_dtype(network.device, settings.precision)):
        logits = network.activations(views, ["logits"])["logits"].float()
    return sum(weight * logits[:, index].mean() for index, weight in region.targets)


def masked(image: torch.Tensor, mask: torch.Tensor | None, background: float) -> torch.Tensor:
    return image if mask is None else image * mask + background * (1 - mask)


def octave_sizes(width: int, height: int, octaves: int) -> list[tuple[int, int]]:
    """(height, width) from the smallest octave to the full size, halving each time (never below 64 px)."""
    sizes = []
    for i in range(octaves - 1, -1, -1):
        scale = 2.0**-i
        if min(width, height) * scale >= 64 or i == 0:
            sizes.append((max(1, round(height * scale)), max(1, round(width * scale))))
    return sizes


def split_steps(steps: int, parts: int) -> list[int]:
    """Spread ``steps`` over ``parts`` octaves, the smallest first getting the remainder."""
    base, extra = divmod(steps, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# ------------------------------------------------------------------------------------------------ modes


def visualize(
    target: str | int,
    settings: DrawSettings | None = None,
    *,
    photo: LoadedImage | Image.Image | None = None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PictureResult:
    """What the network thinks ``target`` (a class name or number) looks like; or that class dreamed into a photo."""
    return mix([target], "blend", settings=settings, photo=photo, on_step=on_step, should_stop=should_stop)


def mix(
    targets: Sequence[str | int],
    layout: str = "side",
    weights: Sequence[float] | None = None,
    settings: DrawSettings | None = None,
    *,
    photo: LoadedImage | Image.Image | None = None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PictureResult:
    """Several classes in one picture: ``side`` by side, one ``above`` the other, or ``blend``ed together."""
    if layout not in MIX_LAYOUTS:
        raise UsageError(f"Unknown layout {layout!r}; use {', '.join(MIX_LAYOUTS)}.")
    if not targets:
        raise UsageError("Name at least one class to draw.")
    if len(targets) > 6:
        raise UsageError(f"{len(targets)} classes are too many for one picture; use at most 6.")
    settings, network = _prepare(settings, photo)
    classes = [find_class(target, network.labels) for target in targets]
    weights = split_weights(len(classes), weights)
    if layout == "blend" or len(classes) == 1:
        plan = [Region((0.0, 0.0, 1.0, 1.0), tuple((c.index, w) for c, w in zip(classes, weights, strict=True)))]
    else:
        plan = [
            Region(box, ((c.index, w),))
            for c, w, box in zip(classes, weights, _strips(len(classes), layout), strict=True)
        ]
    start = None if photo is None else _photo_tensor(photo, settings)
    mode = "visualize" if len(classes) == 1 else "mix"
    params = {"classes": [c.name for c in classes], "weights": weights, "layout": layout, "photo": photo is not None}
    return _run(
        network, lambda step: plan, settings, mode, params, start=start, on_step=on_step, should_stop=should_stop
    )


def draw_path(
    target: str | int,
    shape: str | Sequence[Point] = "circle",
    settings: DrawSettings | None = None,
    *,
    count: int = 12,
    brush: float = 0.3,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PictureResult:
    """Draw a class along a path: a window of ``brush`` times the canvas moves from point to point.

    ``shape`` is line, circle, spiral or wave (``count`` points), or explicit points in pixels, or a
    string ``"x,y x,y ..."`` (pixels, or fractions of the canvas).
    """
    settings, network = _prepare(settings, None)
    if not 0.05 <= brush <= 1.0:
        raise UsageError("brush must be between 0.05 and 1 (a fraction of the canvas).")
    if not 1 <= count <= 200:
        raise UsageError("count (points along the path) must be between 1 and 200.")
    cls = find_class(target, network.labels)
    width, height = settings.width, settings.height
    if isinstance(shape, str) and (not shape.strip() or any(char.isdigit() or char == "," for char in shape)):
        points, shape_name = parse_points(shape, width, height), "points"
    elif isinstance(shape, str):
        points, shape_name = path_points(shape, count, width, height), shape
    else:
        points, shape_name = check_points(shape, width, height), "points"
    side = brush * min(width, height)
    windows = [
        Region(
            (
                max(0.0, (x - side / 2) / width),
                max(0.0, (y - side / 2) / height),
                min(1.0, (x + side / 2) / width),
                min(1.0, (y + side / 2) / height),
            ),
            ((cls.index, 1.0),),
        )
        for x, y in points
    ]

    def regions(step: int) -> list[Region]:
        # Two windows a step, walking along the path, so every point is visited many times.
        return [windows[step % len(windows)], windows[(step + len(windows) // 2) % len(windows)]]

    # Outside the path the canvas stays background: a soft mask around the windows.
    mask = torch.zeros(1, 1, height, width)
    for region in windows:
        x0, y0, x1, y1 = region.box
        mask[:, :, round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = 1.0
    mask = F.avg_pool2d(mask, 9, stride=1, padding=4)
    params = {"classes": [cls.name], "shape": shape_name, "points": [list(p) for p in points], "brush": brush}
    return _run(network, regions, settings, "path", params, mask=mask, on_step=on_step, should_stop=should_stop)


def letters(
    text: str,
    settings: DrawSettings | None = None,
    *,
    target: str | int | None = None,
    overrides: Mapping[str, str] | None = None,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PictureResult:
    """``text`` drawn as a clipping mask: one class fills every letter (``target``), or, in alphabet
    mode (no target), each letter is filled with a class that starts with it (A of axolotls ...)."""
    settings, network = _prepare(settings, None)
    mask, boxes = text_mask(text, settings.width, settings.height)
    if target is not None:
        cls = find_class(target, network.labels)
        fills = [cls for _ in boxes]
    else:
        fills = [alphabet_class(char, overrides, network.labels) for *_box, char in boxes]
    width, height = settings.width, settings.height
    plan = [
        Region(_square_around(box, width, height), ((cls.index, 1.0),))
        for (*box, _char), cls in zip(boxes, fills, strict=True)
    ]

    def regions(step: int) -> list[Region]:
        # At most three letters a step keeps long words affordable; each gets its turn.
        return [plan[(step * 3 + i) % len(plan)] for i in range(min(3, len(plan)))]

    params = {"text": text, "classes": [c.name for c in fills], "alphabet": target is None}
    return _run(network, regions, settings, "letters", params, mask=mask, on_step=on_step, should_stop=should_stop)


def fill_mask(
    target: str | int,
    mask_image: Any,
    settings: DrawSettings | None = None,
    *,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PictureResult:
    """A class drawn inside a user's black-and-white mask (white is drawn, black stays background)."""
    settings, network = _prepare(settings, None)
    mask = image_mask(mask_image, settings.width, settings.height)
    cls = find_class(target, network.labels)
    x0, y0, x1, y1 = boxes_of(mask)
    box = (x0 / settings.width, y0 / settings.height, x1 / settings.width, y1 / settings.height)
    plan = [Region(box, ((cls.index, 1.0),))]
    params = {"classes": [cls.name], "mask": True}
    return _run(
        network, lambda step: plan, settings, "mask", params, mask=mask, on_step=on_step, should_stop=should_stop
    )


# ---------------------------------------------------------------------------------------------- helpers


def _prepare(settings: DrawSettings | None, photo: Any) -> tuple[DrawSettings, Network]:
    settings = settings or DrawSettings()
    if settings.seed is None:
        settings = settings.replace(seed=random.randrange(2**31))
    if photo is not None and photo_size(photo) != (settings.width, settings.height):
        width, height = photo_size(photo)
        scale = min(1.0, max(settings.width, settings.height) / max(width, height))
        settings = settings.replace(width=max(32, round(width * scale)), height=max(32, round(height * scale)))
    network = load_network(settings.network, settings.device)
    prepare_for_speed(network)
    return settings, network


def photo_size(photo: LoadedImage | Image.Image) -> tuple[int, int]:
    return photo.rgb.size if isinstance(photo, LoadedImage) else photo.size


def _photo_tensor(photo: LoadedImage | Image.Image, settings: DrawSettings) -> torch.Tensor:
    rgb = photo.rgb if isinstance(photo, LoadedImage) else photo.convert("RGB")
    return to_tensor(rgb.resize((settings.width, settings.height), Image.Resampling.LANCZOS))


def _strips(count: int, layout: str, overlap: float = 0.08) -> list[Box]:
    """Equal strips across (side) or down (above) the canvas, overlapping a little so they blend."""
    strips = []
    for i in range(count):
        start, end = max(0.0, i / count - overlap), min(1.0, (i + 1) / count + overlap)
        strips.append((start, 0.0, end, 1.0) if layout == "side" else (0.0, start, 1.0, end))
    return strips


def _square_around(box: Sequence[float], width: int, height: int, grow: float = 1.15) -> Box:
    """A square window (as fractions) around a letter's pixel box, a little larger than the letter."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * grow
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        max(0.0, (cx - side / 2) / width),
        max(0.0, (cy - side / 2) / height),
        min(1.0, (cx + side / 2) / width),
        min(1.0, (cy + side / 2) / height),
    )


def _run(
    network: Network,
    regions: Callable[[int], Sequence[Region]],
    settings: DrawSettings,
    mode: str,
    params: dict[str, Any],
    **kwargs: Any,
) -> PictureResult:
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        image = draw_picture(network, regions, settings, **kwargs)
    return PictureResult(to_image(image), mode, params, settings, time.perf_counter() - started)


__all__ = [
    "ALPHABET",
    "MIX_LAYOUTS",
    "DrawSettings",
    "PictureResult",
    "Region",
    "draw_path",
    "draw_picture",
    "fill_mask",
    "letters",
    "mix",
    "visualize",
]
