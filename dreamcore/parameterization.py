"""How a picture drawn from nothing is held while it is optimised.

Plain pixels let the optimiser paint high-frequency static that fools one network and nobody else.
Holding the image as a Fourier spectrum scaled by 1/frequency, in a decorrelated colour space, makes
every direction of the gradient equally "natural", so what emerges looks like a picture (lucid's
``fft_image`` and ``to_valid_rgb``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Square root of ImageNet's colour correlation (lucid's color_correlation_svd_sqrt), column-normalised.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_CORRELATION = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()
_SPECTRUM_SCALE_DOWN = 4.0  # lucid's "magic" constant: keeps initial images near mid-grey


def _frequencies(height: int, width: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """A (1, 3, H, W) image in [0, 1], held as a decorrelated 1/f-scaled spectrum."""

    def __init__(
        self,
        height: int,
        width: int,
        *,
        noise: float = 0.01,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.height, self.width = height, width
        frequencies = _frequencies(height, width)
        scale = 1.0 / frequencies.clamp_min(1.0 / max(height, width)) ** decay_power
        # Normalise so the picture's contrast does not depend on its size.
        scale = scale * math.sqrt(height * width) / math.sqrt(224 * 224)
        self.register_buffer("scale", scale[None, None].to(device))
        self.register_buffer("color", _COLOR_CORRELATION.T.contiguous().to(device))
        shape = (1, 3, *frequencies.shape)
        real = torch.randn(shape, generator=generator) * noise
        imaginary = torch.randn(shape, generator=generator) * noise
        self.spectrum = nn.Parameter(torch.complex(real, imaginary).to(device))

    def forward(self) -> torch.Tensor:
        decorrelated = torch.fft.irfft2(self.scale * self.spectrum, s=(self.height, self.width), norm="ortho")
        decorrelated = decorrelated / _SPECTRUM_SCALE_DOWN
        rgb = torch.einsum("bchw,cd->bdhw", decorrelated, self.color)
        return torch.sigmoid(rgb)

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Start from an existing picture (1, 3, H, W) in [0, 1] (a photo, or a smaller octave's result)."""
        image = torch.nn.functional.interpolate(image, size=(self.height, self.width), mode="bilinear")
        logits = torch.logit(image.clamp(1e-3, 1 - 1e-3))
        decorrelated = torch.einsum("bdhw,dc->bchw", logits, torch.linalg.inv(self.color)) * _SPECTRUM_SCALE_DOWN
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale
        self.spectrum.copy_(spectrum.to(self.spectrum.dtype))
