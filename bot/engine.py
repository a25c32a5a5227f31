"""From a checked command to a finished file: the only place the service calls dreamcore.

Runs in the worker's executor thread. ``report(fraction, text, step_image)`` is called after every
step; the worker decides how often to pass it on (and only then turns ``step_image`` into a preview).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from bot.options import Command, Mode
from dreamcore.animation import encode_animation
from dreamcore.api import dream
from dreamcore.atlas import ATLAS_DEFAULTS, layer_atlas
from dreamcore.classes import parse_class_list
from dreamcore.drawing import DrawSettings, draw_path, letters, mix, visualize
from dreamcore.errors import Cancelled
from dreamcore.images import LoadedImage, encode_image
from dreamcore.networks import load_network
from dreamcore.render import Step
from dreamcore.settings import DreamSettings
from dreamcore.zoom import ZoomSettings, zoom

Report = Callable[[float, str, torch.Tensor | None], None]
ShouldStop = Callable[[], bool]
ANIMATION_MAX_BYTES = 8 * 1024 * 1024  # fits Discord's default 10 MiB with room to spare; adapters re-fit


@dataclass(frozen=True)
class Rendered:
    data: bytes
    extension: str  # "png" or "gif"
    width: int
    height: int
    caption: str  # the settings in one line, for chat posts
    settings: dict[str, Any]  # everything needed to reproduce it


class Engine(Protocol):
    def warm_up(self) -> None: ...

    def render(
        self, command: Command, image: LoadedImage | None, report: Report, should_stop: ShouldStop
    ) -> Rendered: ...


class DreamcoreEngine:
    """The real one: dreamcore on one device, networks loaded once and kept warm."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def warm_up(self) -> None:
        load_network("lite0", self.device)

    def render(self, command: Command, image: LoadedImage | None, report: Report, should_stop: ShouldStop) -> Rendered:
        options = command.options
        if command.mode is Mode.DREAM:
            return self._dream(image, options, report, should_stop)
        if command.mode is Mode.ZOOM:
            return self._zoom(image, options, report, should_stop)
        if command.mode is Mode.ATLAS:
            return self._atlas(image, options, report, should_stop)
        return self._draw(command, report, should_stop)

    def _dream_settings(self, options: dict[str, Any], **extra: Any) -> DreamSettings:
        settings = DreamSettings.from_preset(
            options.get("preset", "default"),
            network=options.get("network"),
            objective=options.get("layer"),
            octaves=options.get("octaves"),
            iterations=options.get("iterations"),
            seed=options.get("seed"),
            device=self.device,
            **extra,
        )
        if "strength" in options:
            settings = settings.replace(step=min(1.0, settings.step * options["strength"]))
        return settings

    def _dream(self, image: LoadedImage | None, options: dict, report: Report, should_stop: ShouldStop) -> Rendered:
        settings = self._dream_settings(options)

        def on_step(step: Step) -> None:
            report(
                step.fraction,
                f"octave {step.octave}/{step.octaves}, step {step.iteration}/{step.iterations}",
                step.image,
            )

        result = dream(image, settings, on_step=on_step, should_stop=should_stop)
        used = result.settings
        caption = f"{used.network} {used.objective} · {used.preset} · seed {used.seed}"
        return _still(result.image, result.metadata(), caption)

    def _zoom(self, image: LoadedImage | None, options: dict, report: Report, should_stop: ShouldStop) -> Rendered:
        values = {key: options[key] for key in ("frames", "zoom", "rotate") if key in options}
        settings = ZoomSettings(**values, dream=self._dream_settings(options))

        def on_frame(index: int, frames: int, step: Step | None) -> None:
            within = step.fraction if step is not None else 1.0
            report((index + within) / frames, f"frame {index + 1}/{frames}", step.image if step else None)

        result = zoom(image, settings, on_frame=on_frame, should_stop=should_stop)
        metadata = result.metadata()
        data = encode_animation(result.frames, "gif", settings.fps, max_bytes=ANIMATION_MAX_BYTES, metadata=metadata)
        used = result.settings.dream
        caption = f"zoom · {len(result.frames)} frames · {used.network} {used.objective} · seed {used.seed}"
        width, height = result.frames[0].size
        return Rendered(data, "gif", width, height, caption, metadata)

    def _atlas(self, image: LoadedImage | None, options: dict, report: Report, should_stop: ShouldStop) -> Rendered:
        settings = DreamSettings.from_preset(
            "default", **ATLAS_DEFAULTS, network=options.get("network"), device=self.device
        )

        def on_step(cell: int, cells: int, step: Step) -> None:
            report((cell + step.fraction) / cells, f"layer {cell + 1}/{cells}", step.image)

        sheet, results = layer_atlas(image, settings, cell_side=256, on_step=on_step, should_stop=should_stop)
        used = results[0].settings
        metadata = {
            "dreamcore": 1,
            "mode": "atlas",
            "settings": used.to_dict(),
            "layers": [r.settings.objective for r in results],
        }
        return _still(sheet, metadata, f"layer atlas · {used.network} · seed {used.seed}")

    def _draw(self, command: Command, report: Report, should_stop: ShouldStop) -> Rendered:
        options = command.options
        size = options.get("size")
        settings = DrawSettings(
            network=options.get("network", "lite0"),
            seed=options.get("seed"),
            device=self.device,
            **({"width": size, "height": size} if size else {}),
            **({"steps": options["steps"]} if "steps" in options else {}),
        )

        def on_step(step: Step) -> None:
            report(
                step.fraction,
                f"scale {step.octave}/{step.octaves}, step {step.iteration}/{step.iterations}",
                step.image,
            )

        hooks = {"on_step": on_step, "should_stop": should_stop}
        subject = command.subject
        if command.mode is Mode.VISUALIZE:
            result = visualize(subject, settings, **hooks)
        elif command.mode is Mode.MIX:
            names = [label.name for label in parse_class_list(subject)]
            result = mix(names, options.get("layout", "side"), settings=settings, **hooks)
        elif command.mode is Mode.PATH:
            result = draw_path(
                subject, options.get("shape", "circle"), settings, count=options.get("count", 12), **hooks
            )
        elif command.mode is Mode.LETTERS:
            result = letters(subject, settings, target=options.get("fill"), **hooks)
        else:  # pragma: no cover - every mode is handled above
            raise ValueError(f"unknown mode {command.mode}")
        classes = ", ".join(result.params.get("classes", []))
        caption = f"{command.mode} {classes} · {result.settings.network} · seed {result.settings.seed}"
        return _still(result.image, result.metadata(), caption)


def _still(image: Image.Image, metadata: dict[str, Any], caption: str) -> Rendered:
    return Rendered(encode_image(image, "png", metadata), "png", image.width, image.height, caption, metadata)


class NullEngine:
    """Answers at once with a tiny picture: measures the service's own overhead, and drives fast tests."""

    def __init__(self, steps: int = 0, fail_on: str | None = None, step_seconds: float = 0.0) -> None:
        self.steps = steps
        self.fail_on = fail_on  # a subject that makes it raise, for tests of the error path
        self.step_seconds = step_seconds  # a pause per step: a dream that lasts, for fault tests

    def warm_up(self) -> None:
        pass

    def render(self, command: Command, image: LoadedImage | None, report: Report, should_stop: ShouldStop) -> Rendered:
        for step in range(self.steps):
            if should_stop():
                raise Cancelled()
            if self.step_seconds:
                time.sleep(self.step_seconds)
            report((step + 1) / self.steps, f"step {step + 1}/{self.steps}", None)
        if self.fail_on and command.subject == self.fail_on:
            raise RuntimeError("the null engine was told to fail")
        picture = image.rgb if image is not None else Image.new("RGB", (8, 8), (128, 64, 200))
        metadata = {"mode": command.mode.value, "options": command.options}
        return _still(picture, metadata, f"{command.mode} (null engine)")
