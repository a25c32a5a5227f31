"""Geometry for drawing: points along paths, and masks from text or a black-and-white image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from dreamcore.errors import UsageError
from dreamcore.images import Source, load_image, to_tensor

PATH_SHAPES = ("line", "circle", "spiral", "wave")

Point = tuple[float, float]


def path_points(shape: str, count: int, width: int, height: int, margin: float = 0.18) -> list[Point]:
    """``count`` points (x, y) in pixels, evenly along a named shape that fills the canvas."""
    if shape not in PATH_SHAPES:
        raise UsageError(f"Unknown path shape {shape!r}; use {', '.join(PATH_SHAPES)}, or give points.")
    if count < 1:
        raise UsageError("A path needs at least one point.")
    cx, cy = width / 2, height / 2
    rx, ry = width * (0.5 - margin), height * (0.5 - margin)
    points = []
    for i in range(count):
        t = i / max(count - 1, 1)
        if shape == "line":
            points.append((width * margin + t * (width - 2 * width * margin), cy))
        elif shape == "circle":
            angle = 2 * math.pi * i / count
            points.append((cx + rx * math.cos(angle), cy + ry * math.sin(angle)))
        elif shape == "spiral":
            angle = 4 * math.pi * t
            radius = 0.15 + 0.85 * t
            points.append((cx + rx * radius * math.cos(angle), cy + ry * radius * math.sin(angle)))
        else:  # wave
            points.append(
                (width * margin + t * (width - 2 * width * margin), cy + ry * 0.6 * math.sin(2 * math.pi * t))
            )
    return points


def parse_points(text: str, width: int, height: int) -> list[Point]:
    """Points typed as ``"x,y x,y ..."`` (or ``;``-separated), in pixels or as fractions of the canvas (0..1)."""
    points = []
    for part in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise UsageError(
                f"Could not read the point {part!r}; write points as x,y x,y ... (e.g. 0.2,0.5)."
            ) from None
        if 0 <= x <= 1 and 0 <= y <= 1:
            x, y = x * width, y * height
        points.append((x, y))
    return check_points(points, width, height)


def check_points(points: Sequence[Point], width: int, height: int) -> list[Point]:
    """Points in pixels, checked to lie on the canvas."""
    checked = []
    for point in points:
        x, y = (float(v) for v in point)
        if not (0 <= x <= width and 0 <= y <= height):
            raise UsageError(f"The point {x:g},{y:g} lies outside the {width}x{height} canvas.")
        checked.append((x, y))
    if not checked:
        raise UsageError("No points given; write them as x,y x,y ... (e.g. 0.2,0.5 0.8,0.5).")
    return checked


def text_mask(text: str, width: int, height: int, *, padding: float = 0.06) -> tuple[torch.Tensor, list[tuple]]:
    """A (1, 1, H, W) mask of ``text`` in [0, 1], as large as fits, and each letter's box (x0, y0, x1, y1, char).

    Pillow's built-in font scales to any size without a font package.
    """
    text = " ".join(text.split())
    if not text:
        raise UsageError("The text is empty; give at least one letter to draw.")
    if len(text) > 40:
        raise UsageError(f"The text has {len(text)} characters; at most 40 fit on one picture.")
    probe = ImageFont.load_default(size=100)
    left, top, right, bottom = probe.getbbox(text)
    scale = min(width * (1 - 2 * padding) / max(right - left, 1), height * (1 - 2 * padding) / max(bottom - top, 1))
    font = ImageFont.load_default(size=max(8, int(100 * scale)))
    left, top, right, bottom = font.getbbox(text)
    origin = ((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text(origin, text, fill=255, font=font)
    boxes = []
    x = origin[0]
    for char in text:
        advance = font.getlength(char)
        if not char.isspace():
            box = draw.textbbox((x, origin[1]), char, font=font)
            boxes.append((*box, char))
        x += advance
    return _soft(canvas), boxes


def image_mask(source: Source, width: int, height: int) -> torch.Tensor:
    """A (1, 1, H, W) mask from a user's black-and-white picture: white is drawn, black is background.

    The mask must have the canvas's proportions (within 2 %), so nothing gets squashed.
    """
    loaded = load_image(source)
    mask_width, mask_height = loaded.rgb.size
    if abs(mask_width / mask_height - width / height) > 0.02 * (width / height):
        raise UsageError(
            f"The mask is {mask_width}x{mask_height} but the picture is {width}x{height}; "
            "use a mask with the same proportions, or set the picture's size to match."
        )
    gray = loaded.rgb.convert("L").resize((width, height), Image.Resampling.LANCZOS)
    if loaded.alpha is not None:  # transparent means background
        gray = ImageChops.multiply(gray, loaded.alpha.resize((width, height), Image.Resampling.LANCZOS))
    mask = _soft(gray)
    if float(mask.mean()) < 0.002:
        raise UsageError("The mask is all black, so there is nothing to draw; white areas are where the picture goes.")
    return mask


def boxes_of(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """The bounding box (x0, y0, x1, y1) of a mask's drawn area."""
    ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    if len(xs) == 0:
        return (0, 0, mask.shape[-1], mask.shape[-2])
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _soft(gray: Image.Image) -> torch.Tensor:
    # A pixel of feathering keeps the letter edges from looking cut out with scissors.
    return to_tensor(gray.filter(ImageFilter.GaussianBlur(1)).convert("RGB"))[:, :1]


def split_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * count
    if len(weights) != count or any(not math.isfinite(w) or w <= 0 for w in weights):
        raise UsageError(f"Give {count} positive weights, one for each class.")
    return list(weights)
