"""The endless zoom of the original DeepDream notebook: dream a frame, zoom into its centre, dream again.

Each frame starts from the previous one scaled up (and optionally turned) about its centre, so the dream
keeps growing new detail where the zoom blurs the old. Only the first frame needs the full preset: later
frames already carry the dream and get a few cheap steps each (see :class:`ZoomSettings`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from dreamcore.api import ImageSource, StopFn, as_loaded, dream, resolve
from dreamcore.errors import Cancelled, UsageError
from dreamcore.images import from_pil, to_image, to_tensor
from dreamcore.networks import load_network
from dreamcore.render import Step
from dreamcore.settings import DreamSettings, SettingsRecord, check_field_types, require

# frame index (0-based), frame count, the frame's current step or None once the frame is finished
FrameProgressFn = Callable[[int, int, Step | None], None]

MAX_FRAMES = 600


@dataclass(frozen=True)
class ZoomSettings(SettingsRecord):
    """Everything that decides what a zoom animation looks like."""

    kind = "zoom setting"

    frames: int = 48
    zoom: float = 1.05  # scale per frame: 1.05 flies 5% closer every frame, as in the 2015 notebook
    rotate: float = 0.0  # degrees per frame, counter-clockwise
    fps: int = 12
    size: int = 512  # longer side of the frames; larger photos are scaled down to it, smaller ones kept
    # Frames after the first start from an already dreamed picture, so a few steps renew the detail the zoom
    # blurred; the full preset on every frame would take 4x longer and look much the same. Three octaves
    # rather than two keep the larger shapes crisp over many frames at 17% more work.
    frame_octaves: int = 3
    frame_iterations: int = 5
    dream: DreamSettings = field(default_factory=DreamSettings)  # the first frame's settings (the full preset)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:

        check_field_types(self)
        require(
            1 <= self.frames <= MAX_FRAMES,
            f"frames must be between 1 and {MAX_FRAMES} (got {self.frames}); 48 frames make 4 seconds at 12 fps.",
        )
        require(
            math.isfinite(self.zoom) and 1.0 <= self.zoom <= 1.5,
            f"zoom must be between 1 and 1.5 per frame (got {self.zoom}); 1.05 is a gentle flight inward.",
        )
        require(
            math.isfinite(self.rotate) and -45 <= self.rotate <= 45,
            f"rotate must be between -45 and 45 degrees per frame (got {self.rotate}).",
        )
        require(1 <= self.fps <= 60, f"fps must be between 1 and 60 frames per second (got {self.fps}).")
        require(16 <= self.size <= 2048, f"size must be between 16 and 2048 pixels (got {self.size}).")
        require(1 <= self.frame_octaves <= 12, f"frame octaves must be between 1 and 12 (got {self.frame_octaves}).")
        require(
            1 <= self.frame_iterations <= 500,
            f"frame iterations must be between 1 and 500 (got {self.frame_iterations}).",
        )

    @property
    def seconds(self) -> float:
        """How long the animation plays."""
        return self.frames / self.fps

    def frame_dream(self, index: int) -> DreamSettings:
        """The dream settings of frame ``index`` (0-based): the full ones first, then the cheaper ones.

        Later frames never dream harder than the first. With a seed, frame ``index`` uses seed + index,
        so one seed reproduces the whole animation while no two frames jitter alike.
        """
        settings = self.dream
        if index > 0:
            settings = settings.replace(
                octaves=min(settings.octaves, self.frame_octaves),
                iterations=min(settings.iterations, self.frame_iterations),
            )
        if settings.seed is not None:
            settings = settings.replace(seed=(settings.seed + index) % 2**63)
        return settings

    def frame_steps(self, index: int) -> int:
        """Gradient steps frame ``index`` takes (for progress bars)."""
        settings = self.frame_dream(index)
        return settings.octaves * settings.iterations

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ZoomSettings:
        values = cls.check_known(values)
        dream_values = values.pop("dream", None)
        if dream_values is not None and not isinstance(dream_values, DreamSettings):
            if not isinstance(dream_values, dict):
                raise UsageError(f"dream must be a JSON object of dream settings (got {dream_values!r}).")
            dream_values = DreamSettings.from_dict(dream_values)
        return cls(**values, **({"dream": dream_values} if dream_values is not None else {}))


@dataclass(frozen=True)
class ZoomResult:
    frames: list[Image.Image]
    settings: ZoomSettings  # resolved: network, objective and seed filled in, so the animation can be reproduced
    seconds: float

    def metadata(self) -> dict:
        """What to store in the animation file. "settings" holds the first frame's dream settings, as in a
        still result, so ``dreamcore dream --settings`` and ``dreamcore settings`` read it too."""
        zoom_values = {key: value for key, value in self.settings.to_dict().items() if key != "dream"}
        return {
            "dreamcore": 1,
            "settings": self.settings.dream.to_dict(),
            "zoom": zoom_values,
            "seconds": round(self.seconds, 3),
        }


def settings_from_metadata(metadata: dict) -> ZoomSettings:
    """The ZoomSettings stored by :meth:`ZoomResult.metadata` (from ``read_animation_metadata``)."""
    zoom_values = metadata.get("zoom")
    if not isinstance(zoom_values, dict) or not isinstance(metadata.get("settings"), dict):
        raise UsageError("This file holds no zoom settings; pass an animation made by `dreamcore zoom`.")
    return ZoomSettings.from_dict({**zoom_values, "dream": metadata["settings"]})


def zoom_in(image: torch.Tensor, zoom: float, rotate: float = 0.0) -> torch.Tensor:
    """Scale (1, 3, H, W) up by ``zoom`` and turn it by ``rotate`` degrees about its centre; same size out.

    Bilinear, like the notebook's affine_transform. Where turning brings in corners from outside the
    picture they are mirrored in, so no black wedges appear (and get dreamed into).
    """
    if zoom == 1.0 and rotate == 0.0:
        return image
    height, width = image.shape[-2:]
    angle = math.radians(rotate)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # affine_grid works in [-1, 1] coordinates on both axes; the aspect ratio terms keep turns true to pixels.
    theta = torch.tensor(
        [[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
        dtype=image.dtype,
        device=image.device,
    ).unsqueeze(0)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def zoom(
    image: ImageSource,
    settings: ZoomSettings | None = None,
    *,
    on_frame: FrameProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ZoomResult:
    """Dream ``image``, zoom into it, dream again: ``settings.frames`` frames of one size.

    ``on_frame(index, frames, step)`` is called after every gradient step of every frame, and with
    ``step=None`` once a frame is finished. ``should_stop`` is checked between frames and between steps;
    when it returns True the zoom raises :class:`Cancelled`.
    """
    settings = settings or ZoomSettings()
    started = time.perf_counter()
    side = min(settings.size, settings.dream.max_side or settings.size)
    loaded = as_loaded(image, max_side=side)
    current = loaded.rgb if max(loaded.size) <= side else from_pil(loaded.rgb, max_side=side).rgb
    # Resolve once, up front: every frame must dream at the same layers, and the seed must be known to
    # derive the frames' seeds from it.
    network = load_network(settings.dream.network, settings.dream.device)
    settings = settings.replace(dream=resolve(settings.dream, network))

    frames: list[Image.Image] = []
    for index in range(settings.frames):
        if should_stop is not None and should_stop():
            raise Cancelled("The zoom was cancelled.")
        if index > 0:
            with torch.no_grad():
                current = to_image(zoom_in(to_tensor(frames[-1]), settings.zoom, settings.rotate))
        report = (lambda step, index=index: on_frame(index, settings.frames, step)) if on_frame else None
        result = dream(current, settings.frame_dream(index), on_step=report, should_stop=should_stop)
        frames.append(result.image.convert("RGB"))
        if on_frame is not None:
            on_frame(index, settings.frames, None)
    return ZoomResult(frames, settings, time.perf_counter() - started)
