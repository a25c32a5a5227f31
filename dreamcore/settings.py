"""Typed settings for one dream, and the named presets that fill them in.

Settings are plain frozen values: they validate themselves, turn into JSON (stored in every result so
it can be reproduced) and come back from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Self

from dreamcore.errors import UnknownNameError, UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


_NOUNS = {int: "a whole number", float: "a number", str: "text", dict: "a JSON object"}


def check_field_types(settings: Any, optional: set[str] = frozenset()) -> None:
    """Values from JSON or a chat can be of any type: say which one is wrong instead of crashing later.

    Fields are checked against their annotations (int, float, str, dict; ``X | None`` for ``optional``).
    """
    hints = typing.get_type_hints(type(settings))
    for spec in dataclasses.fields(settings):
        hint = hints[spec.name]
        origin = typing.get_origin(hint)
        if origin is dict or isinstance(hint, type):
            kind = origin or hint  # also nested settings, e.g. a zoom's DreamSettings
        else:  # "int | None" and the like
            kind = next(t for t in typing.get_args(hint) if t in _NOUNS)
        value = getattr(settings, spec.name)
        if value is None and spec.name in optional:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue  # 2 is a fine step size
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            or_empty = " or empty" if spec.name in optional else ""
            noun = _NOUNS.get(kind, kind.__name__)
            raise UsageError(f"{spec.name.replace('_', ' ')} must be {noun}{or_empty} (got {value!r}).")


def require(ok: bool, message: str) -> None:
    """A settings check: ``message`` says what is allowed."""
    if not ok:
        raise UsageError(message)


class SettingsRecord:
    """What every settings dataclass shares: copies with changes, JSON, and reading back with a check."""

    kind = "setting"  # how errors name these settings

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def check_known(cls, values: Any) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise UsageError(f"{cls.kind.capitalize()}s must be a JSON object (got {values!r}).")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"Unknown {cls.kind}(s) {', '.join(unknown)}; known ones are {', '.join(sorted(known))}.")
        return dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return cls(**cls.check_known(values))


@dataclass(frozen=True)
class DreamSettings(SettingsRecord):
    """Everything that decides what a dream looks like (and where it runs)."""

    network: str = "lite0"
    objective: str = ""  # layer spec, e.g. "block8" or "inception_4c:12+0.5*inception_4d"; "" = the preset's
    preset: str = "default"
    octaves: int = 4
    octave_scale: float = 1.4
    iterations: int = 10
    step: float = 0.008  # in [0, 1] pixel units per step, with the gradient normalised to mean |g| = 1
    jitter: int = 32  # pixels the image is rolled by at random before each step
    tile_size: int | None = None  # tiles hold at most tile_size squared pixels; None = the device's default
    seed: int | None = None
    max_side: int | None = None
    max_loss: float | None = None  # stop an octave early once the loss passes this (the Keras example's max_loss)
    device: str = "auto"
    precision: str = "auto"  # auto, fp32, bf16, fp16
    guide_layer: str = ""  # with a guide image: the layer to match (default: the objective's first layer)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. the guide file's name)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:

        check_field_types(self, optional=_OPTIONAL)
        require(1 <= self.octaves <= 12, f"octaves must be between 1 and 12 (got {self.octaves}).")
        require(1.05 <= self.octave_scale <= 3.0, f"octave scale must be between 1.05 and 3 (got {self.octave_scale}).")
        require(1 <= self.iterations <= 500, f"iterations must be between 1 and 500 (got {self.iterations}).")
        require(0 < self.step <= 1.0, f"step must be above 0 and at most 1 (got {self.step}).")
        require(0 <= self.jitter <= 512, f"jitter must be between 0 and 512 pixels (got {self.jitter}).")
        require(
            self.tile_size is None or 64 <= self.tile_size <= 8192,
            f"tile size must be between 64 and 8192 pixels (got {self.tile_size}).",
        )
        require(self.max_side is None or 16 <= self.max_side <= 16384, "max side must be between 16 and 16384 pixels.")
        require(self.seed is None or 0 <= self.seed < 2**63, "seed must be a non-negative integer.")
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}.")

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> DreamSettings:
        """The preset's values, with ``overrides`` (options the user gave) on top."""
        chosen = get_preset(preset)
        values = {**chosen.values, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=chosen.name, **values)


_OPTIONAL = {"seed", "max_side", "max_loss", "tile_size"}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    values: dict[str, Any]
    # The layer to dream at, per network; other networks use the layer at ``depth`` (0..1) of their catalog.
    layers: dict[str, str]
    depth: float


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "subtle",
            "fine strokes and textures that keep the photo recognisable",
            {"octaves": 3, "iterations": 8, "step": 0.005},
            {
                "lite0": "block3",
                "lite1": "block5",
                "lite2": "block5",
                "googlenet": "inception_3b",
                "vgg16": "conv3_1",
                "inception_v3": "mixed_5b",
            },
            0.25,
        ),
        Preset(
            "patterns",
            "swirls, scales and ornaments",
            {"octaves": 4, "iterations": 10, "step": 0.006},
            {
                "lite0": "block5",
                "lite1": "block8",
                "lite2": "block8",
                "googlenet": "inception_4a",
                "vgg16": "conv4_2",
                "inception_v3": "mixed_5d",
            },
            0.4,
        ),
        Preset(
            "default",
            "the classic look: eyes, fur and dog faces",
            {"octaves": 4, "iterations": 10, "step": 0.008},
            {
                "lite0": "block9",
                "lite1": "block12",
                "lite2": "block12",
                "googlenet": "inception_4c",
                "vgg16": "conv5_1",
                "inception_v3": "mixed_6b",
            },
            0.55,
        ),
        Preset(
            "deep",
            "more creatures, stronger: the photo mostly disappears",
            {"octaves": 5, "iterations": 14, "step": 0.012},
            {
                "lite0": "block10",
                "lite1": "block14",
                "lite2": "block14",
                "googlenet": "inception_4e",
                "vgg16": "conv5_2",
                "inception_v3": "mixed_6e",
            },
            0.7,
        ),
        Preset(
            "nightmare",
            "several layers at once, as strong as it goes",
            {"octaves": 6, "iterations": 20, "step": 0.012},
            {
                "lite0": "block9+block12+0.5*block14",
                "lite1": "block12+block16+0.5*block18",
                "lite2": "block12+block16+0.5*block18",
                "googlenet": "inception_4c+inception_4e+0.5*inception_5a",
                "vgg16": "conv4_3+conv5_2",
                "inception_v3": "mixed_6b+mixed_6e+0.5*mixed_7a",
            },
            0.85,
        ),
    )
}


def get_preset(name: str) -> Preset:
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.4)
    raise UnknownNameError("preset", name, close, f"Presets: {', '.join(PRESETS)}.")


def preset_objective(preset: Preset, network: str, catalog_names: list[str]) -> str:
    """The preset's layer spec for ``network``; for networks it does not name, a layer at its depth."""
    if network in preset.layers:
        return preset.layers[network]
    features = [name for name in catalog_names if name not in ("logits",)]
    return features[min(len(features) - 1, round(preset.depth * (len(features) - 1)))]
