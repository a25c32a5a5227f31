"""Random transforms applied to a picture before the network sees it, at every optimisation step.

A picture that only works pixel-perfectly is an adversarial pattern; one that still raises its class
when shifted, scaled and turned a little is a picture of the thing (lucent's ``transform.py``).
The whole chain is one affine resampling, so it costs one pass over the image.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RobustnessTransforms:
    """Jitter (pixels), scale range and rotation range (degrees), drawn anew at every step."""

    jitter: int = 16
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    pad_value: float = 0.5

    def __call__(self, images: torch.Tensor, rng: random.Random, out_size: tuple[int, int] | None = None):
        batch, _, height, width = images.shape
        thetas = []
        for _ in range(batch):
            scale = rng.uniform(*self.scale)
            angle = math.radians(rng.uniform(-self.rotate, self.rotate))
            shift_x = rng.uniform(-self.jitter, self.jitter) * 2 / width
            shift_y = rng.uniform(-self.jitter, self.jitter) * 2 / height
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            thetas.append([[cos, -sin * height / width, shift_x], [sin * width / height, cos, shift_y]])
        theta = torch.tensor(thetas, dtype=images.dtype, device=images.device)
        size = (batch, images.shape[1], *(out_size or (height, width)))
        grid = F.affine_grid(theta, size, align_corners=False)
        # Sample around the mid-grey border value, so edges read as "background", not black.
        shifted = images - self.pad_value
        return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + self.pad_value
