"""The DeepDream loop, readable top to bottom (the 2015 notebook's algorithm, in the Keras example's shape).

Octaves from small to full size; at each, a few steps of gradient ascent on the image with normalised
gradients and a random roll (jitter). What the dream added at one octave (its detail) is scaled up and
laid over the sharper photo of the next, as in the original notebook.
How the gradient is computed (tiles, precision, memory layout) is not this file's business: it is
handed a ``gradient`` function, see ``dreamcore.gradients``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dreamcore.errors import Cancelled

# image (1, 3, H, W) in [0, 1] -> (loss, gradient of the loss with respect to the image)
GradientFn = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


@dataclass(frozen=True)
class Step:
    """Where a render is: handed to the progress callback after every step."""

    octave: int  # 1-based
    octaves: int
    iteration: int  # 1-based, within the octave
    iterations: int
    loss: float
    image: torch.Tensor  # the current image at this octave's size (do not modify)

    @property
    def fraction(self) -> float:
        return ((self.octave - 1) * self.iterations + self.iteration) / (self.octaves * self.iterations)


def octave_shapes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes from the smallest octave to the original size."""
    shapes = [(max(1, round(height / scale**i)), max(1, round(width / scale**i))) for i in range(octaves)]
    return shapes[::-1]


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == shape:
        return image
    shrinking = shape[0] < image.shape[-2]
    return F.interpolate(image, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)


def gradient_ascent_step(
    image: torch.Tensor, gradient: GradientFn, step: float, jitter: int, rng: random.Random
) -> tuple[torch.Tensor, float]:
    # Roll by a random offset so tile and padding borders never sit in the same place twice.
    dy, dx = rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)
    loss, grad = gradient(torch.roll(image, shifts=(dy, dx), dims=(2, 3)))
    grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
    # Normalised by its mean size, so ``step`` means the same at every octave, layer and network.
    scale = step / float(grad.abs().mean().clamp_min(1e-8))
    return image.add(grad, alpha=scale).clamp_(0.0, 1.0), loss


def deep_dream(
    original: torch.Tensor,
    gradient: GradientFn,
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    iterations: int = 10,
    step: float = 0.006,
    jitter: int = 32,
    max_loss: float | None = None,
    seed: int = 0,
    on_step: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Dream ``original`` (1, 3, H, W) in [0, 1]; returns an image of the same size."""
    rng = random.Random(seed)
    shapes = octave_shapes(original.shape[-2], original.shape[-1], octaves, octave_scale)
    detail = torch.zeros_like(resize(original, shapes[0]))

    for octave, shape in enumerate(shapes, start=1):
        octave_base = resize(original, shape)
        image = (octave_base + resize(detail, shape)).clamp_(0.0, 1.0)
        for iteration in range(1, iterations + 1):
            if should_stop is not None and should_stop():
                raise Cancelled()
            image, loss = gradient_ascent_step(image, gradient, step, jitter, rng)
            if on_step is not None:
                on_step(Step(octave, octaves, iteration, iterations, loss, image))
            if max_loss is not None and loss > max_loss:
                break
        detail = image - octave_base

    return image
