"""The one description of what people can ask for: modes, their options, and the text grammar.

Every way in reads this table: the text grammar of chat posts (``#deepdream layer=block9 deeper``,
``@bot visualize banana``), the web page's form (served as JSON by :func:`describe_modes`) and, later,
the slash commands. Validation happens here, before a request is queued, so a typo is answered at
once with the valid values instead of failing minutes later in the worker.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dreamcore.api import check_layers_exist
from dreamcore.classes import parse_class_list
from dreamcore.drawing import MIX_LAYOUTS
from dreamcore.errors import DreamError, UnknownNameError
from dreamcore.networks import get_spec, layer_catalog, list_networks
from dreamcore.settings import PRESETS
from dreamcore.shapes import PATH_SHAPES


class OptionError(ValueError):
    """A request that cannot be understood; ``str()`` is a sentence saying what to write instead."""


class Mode(StrEnum):
    DREAM = "dream"
    VISUALIZE = "visualize"
    MIX = "mix"
    PATH = "path"
    LETTERS = "letters"
    ZOOM = "zoom"
    ATLAS = "atlas"


Choices = tuple[str, ...] | Callable[[Mapping[str, Any]], Sequence[str]]


@dataclass(frozen=True)
class Option:
    """One option: its type, range or choices, and a line of help."""

    name: str
    kind: type  # int, float or str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    # Fixed choices, or a function of the other options (a network's layers depend on the network).
    choices: Choices | None = None
    example: str = ""
    # A check of its own for text that is richer than a list of choices (layer specs such as "block9+block12").
    check: Callable[[str, Mapping[str, Any]], None] | None = None

    def valid_choices(self, options: Mapping[str, Any]) -> list[str]:
        if self.choices is None:
            return []
        return list(self.choices(options) if callable(self.choices) else self.choices)

    def convert(self, raw: Any, options: Mapping[str, Any]) -> Any:
        """``raw`` (text from a chat, a form field, or a typed value) as this option's value, checked."""
        if self.kind is str:
            value = str(raw).strip()
            if self.check is not None:
                self.check(value, options)
                return value
            choices = self.valid_choices(options)
            if choices and value.lower() not in {c.lower() for c in choices}:
                close = difflib.get_close_matches(value.lower(), [c.lower() for c in choices], n=3, cutoff=0.5)
                listed = close or choices[:12]
                more = "" if close or len(choices) <= 12 else " (and more)"
                raise OptionError(
                    f"{self.name}={value} is not something I know; "
                    f"{'did you mean' if close else 'try one of'} {', '.join(listed)}{more}{'?' if close else '.'}"
                )
            return next((c for c in choices if c.lower() == value.lower()), value)
        try:
            value = self.kind(raw) if not isinstance(raw, str) else self.kind(raw.strip())
        except (TypeError, ValueError):
            kind = "a whole number" if self.kind is int else "a number"
            raise OptionError(f"{self.name} needs {kind} (got {raw!r}), e.g. {self.name}={self.example}.") from None
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise OptionError(f"{self.name} must be between {_number(low)} and {_number(high)} (got {_number(value)}).")
        return value

    def describe(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        choices = self.valid_choices(options or {})
        return {
            "name": self.name,
            "type": self.kind.__name__,
            "help": self.help,
            "min": self.minimum,
            "max": self.maximum,
            "choices": choices or None,
            "example": self.example,
        }


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _networks(_options: Mapping[str, Any]) -> list[str]:
    return [spec.name for spec in list_networks()]


def _layers(options: Mapping[str, Any]) -> list[str]:
    return layer_catalog(options.get("network") or "lite0").names()


def _check_layer(value: str, options: Mapping[str, Any]) -> None:
    try:
        check_layers_exist(value, layer_catalog(options.get("network") or "lite0"))
    except DreamError as error:
        # dreamcore's hint names its command line; here people pick layers from pictures or a list.
        cli_hint = r" Run `dreamcore layers [^`]*` to see all (\d+) layers\."
        message = re.sub(cli_hint, r" The layer pictures show all \1.", str(error))
        raise OptionError(message) from None


# Words that pick a preset without "preset=": "#deepdream deeper" reads better than "preset=deep".
PRESET_WORDS = {
    **{name: name for name in PRESETS},
    "deeper": "deep",
    "gentle": "subtle",
    "light": "subtle",
    "pattern": "patterns",
    "nightmares": "nightmare",
    "scary": "nightmare",
}

NETWORK = Option("network", str, "network to dream with", choices=_networks, example="lite0")
PRESET = Option("preset", str, "a named look, from subtle to nightmare", choices=tuple(PRESETS), example="deep")
LAYER = Option(
    "layer",
    str,
    "the layer to make fire harder (see the layer pictures); several: block9+0.5*block12",
    choices=_layers,
    example="block9",
    check=_check_layer,
)
OCTAVES = Option("octaves", int, "scales the dream works at", 1, 8, example="4")
ITERATIONS = Option("iterations", int, "steps per scale", 1, 50, example="10")
STRENGTH = Option("strength", float, "how hard each step pushes (1 = the preset's)", 0.25, 4.0, example="1.5")
SEED = Option("seed", int, "repeat a result exactly", 0, 2**31 - 1, example="42")
SIZE = Option("size", int, "longer side of a picture drawn from nothing", 128, 1024, example="512")
LAYOUT = Option("layout", str, "side by side, above each other, or blended", choices=MIX_LAYOUTS, example="side")
STEPS = Option("steps", int, "optimisation steps of a picture drawn from nothing", 16, 512, example="256")


@dataclass(frozen=True)
class ModeSpec:
    mode: Mode
    help: str
    needs_image: bool
    options: tuple[Option, ...]
    subject: str = ""  # what the free words mean ("class", "classes", "text"); "" = no free words
    example: str = ""
    aliases: tuple[str, ...] = ()

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        close = difflib.get_close_matches(name, [o.name for o in self.options], n=3, cutoff=0.5)
        known = ", ".join(o.name for o in self.options)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise OptionError(f"{self.mode} has no option {name!r}.{hint} Its options: {known}.")


MODES: dict[Mode, ModeSpec] = {
    spec.mode: spec
    for spec in (
        ModeSpec(
            Mode.DREAM,
            "dream a photo",
            True,
            (PRESET, NETWORK, LAYER, OCTAVES, ITERATIONS, STRENGTH, SEED),
            example="deeper layer=block10",
            aliases=("deepdream", "dreams"),
        ),
        ModeSpec(
            Mode.VISUALIZE,
            "draw what the network thinks a class looks like",
            False,
            (NETWORK, SIZE, STEPS, SEED),
            subject="class",
            example="visualize banana",
            aliases=("draw", "visualise", "show"),
        ),
        ModeSpec(
            Mode.MIX,
            "several classes side by side in one picture",
            False,
            (NETWORK, LAYOUT, SIZE, STEPS, SEED),
            subject="classes",
            example="mix gorilla + french horn",
        ),
        ModeSpec(
            Mode.PATH,
            "a class drawn again and again along a line, circle, spiral or wave",
            False,
            (
                NETWORK,
                Option("shape", str, "the path's shape", choices=PATH_SHAPES, example="spiral"),
                Option("count", int, "how many along the path", 3, 40, example="12"),
                SIZE,
                STEPS,
                SEED,
            ),
            subject="class",
            example="path jellyfish shape=line",
        ),
        ModeSpec(
            Mode.LETTERS,
            "text whose letters are made of things (A of apes, B of bananas)",
            False,
            (NETWORK, Option("fill", str, "one class for every letter", example="ape"), SIZE, STEPS, SEED),
            subject="text",
            example="letters HELLO",
        ),
        ModeSpec(
            Mode.ZOOM,
            "an endless zoom into a dream, as an animation",
            True,
            (
                PRESET,
                NETWORK,
                LAYER,
                Option("frames", int, "length of the animation", 8, 120, example="48"),
                Option("zoom", float, "closer by this much every frame", 1.0, 1.5, example="1.05"),
                Option("rotate", float, "degrees turned every frame", -10.0, 10.0, example="1"),
                SEED,
            ),
            example="zoom frames=48",
        ),
        ModeSpec(
            Mode.ATLAS,
            "one photo dreamed at a row of layers, to see what each layer does",
            True,
            (NETWORK,),
            example="atlas network=lite0",
            aliases=("layers",),
        ),
    )
}

_MODE_WORDS = {word: spec.mode for spec in MODES.values() for word in (spec.mode.value, *spec.aliases)}


@dataclass(frozen=True)
class Command:
    """A parsed and checked request: the mode, its free words, and typed options."""

    mode: Mode
    subject: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "subject": self.subject, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Command:
        return cls(Mode(data["mode"]), data.get("subject", ""), dict(data.get("options", {})))


def build_command(
    mode: str | Mode,
    subject: str = "",
    options: Mapping[str, Any] | None = None,
    *,
    networks: Sequence[str] | None = None,
) -> Command:
    """Check a request given field by field (the web form, slash commands); raises OptionError.

    ``networks``: the networks this bot can use (bot.networks); a network outside them is refused.
    """
    spec = _mode_spec(mode)
    raw = {key: value for key, value in (options or {}).items() if value not in (None, "")}
    if networks is not None and "network" in raw:
        raw["network"] = offered_network(str(raw["network"]), networks)
    values: dict[str, Any] = {}
    # The network first: other options' choices (layers) depend on it.
    for name in sorted(raw, key=lambda key: key != "network"):
        values[name] = spec.option(name).convert(raw[name], values)
    subject = " ".join(subject.split())
    _check_subject(spec, subject)
    return Command(spec.mode, subject, values)


TOKEN = re.compile(r"^([A-Za-z_]+)=(.+)$")
# Ignored wherever they are: mentions, the tags, and links (a linked picture is the image, not a word).
IGNORED = re.compile(r"^(<@!?&?\d+>|@\S+|#deepdream|#dreambot|https?://\S+)$", re.IGNORECASE)


def parse_command(text: str, *, has_image: bool, networks: Sequence[str] | None = None) -> Command:
    """Read a chat post: ``[mode] [free words] [key=value ...] [preset word]``; raises OptionError.

    Mentions, the #deepdream tag and links are ignored wherever they are. With an image and no mode word the
    mode is ``dream``; without an image one of the drawing modes must be named.
    """
    try:
        tokens = shlex.split(text.replace("“", '"').replace("”", '"'))
    except ValueError:
        tokens = text.split()  # an unmatched quote: read the words as they are
    tokens = [token for token in tokens if not IGNORED.match(token)]
    mode: Mode | None = None
    if tokens and tokens[0].lower() in _MODE_WORDS:
        mode = _MODE_WORDS[tokens.pop(0).lower()]
    if mode is None:
        if not has_image:
            raise OptionError(
                "Attach a photo to dream it, or ask for a picture from nothing, e.g. "
                "'visualize banana', 'mix gorilla + french horn' or 'letters HELLO'."
            )
        mode = Mode.DREAM
    spec = MODES[mode]
    raw: dict[str, str] = {}
    words: list[str] = []
    for token in tokens:
        match = TOKEN.match(token)
        if match:
            raw[match.group(1).lower()] = match.group(2)
        elif any(o.name == "preset" for o in spec.options) and token.lower() in PRESET_WORDS:
            raw["preset"] = PRESET_WORDS[token.lower()]
        else:
            words.append(token)
    if words and not spec.subject:
        presets = ", ".join(PRESETS)
        raise OptionError(
            f"I don't know what {' '.join(words)!r} means for {mode}. Use key=value options "
            f"({', '.join(o.name for o in spec.options)}) or a look: {presets}."
        )
    if spec.needs_image and not has_image:
        raise OptionError(f"{mode} needs a photo: attach one (PNG, JPEG, WebP or GIF) or reply to a message with one.")
    return build_command(mode, " ".join(words), raw, networks=networks)


def _mode_spec(mode: str | Mode) -> ModeSpec:
    key = str(mode).strip().lower()
    if key in _MODE_WORDS:
        return MODES[_MODE_WORDS[key]]
    close = difflib.get_close_matches(key, list(_MODE_WORDS), n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise OptionError(f"There is no mode {key!r}.{hint} Modes: {', '.join(m.value for m in Mode)}.")


def _check_subject(spec: ModeSpec, subject: str) -> None:
    """Class names and letters are checked now, so a typo is answered before the request waits in line."""
    if not spec.subject:
        return
    if not subject:
        raise OptionError(f"{spec.mode} needs {_a(spec.subject)}, e.g. '{spec.example}'.")
    try:
        if spec.subject in ("class", "classes"):
            classes = parse_class_list(subject)
            if spec.subject == "class" and len(classes) > 1:
                raise OptionError(f"{spec.mode} draws one class; use mix for several, e.g. 'mix {subject}'.")
            if spec.subject == "classes" and len(classes) < 2:
                raise OptionError(f"mix needs two classes or more, e.g. '{spec.example}'.")
        elif spec.subject == "text" and (not any(ch.isalnum() for ch in subject) or len(subject) > 12):
            raise OptionError("letters needs some text of at most 12 letters or digits, e.g. 'letters HELLO'.")
    except UnknownNameError as error:
        raise OptionError(str(error)) from None
    except DreamError as error:
        raise OptionError(str(error)) from None


def _a(noun: str) -> str:
    return {"class": "a class", "classes": "two classes or more", "text": "some text"}.get(noun, noun)


def check_network(name: str) -> str:
    """The canonical name of a network, or an OptionError listing the known ones."""
    try:
        return get_spec(name).name
    except DreamError as error:
        raise OptionError(str(error)) from None


def offered_network(name: str, networks: Sequence[str]) -> str:
    """The canonical name of ``name`` when it is among ``networks`` (those this bot can use); else OptionError.

    A network dreamcore knows but this bot lacks gets a sentence for the person, not the operator's
    install hint (that names server paths and commands: it goes to the log and `dreambot status`).
    """
    try:
        canonical = get_spec(name).name
    except DreamError:
        close = difflib.get_close_matches(name.strip().lower(), list(networks), n=3, cutoff=0.4)
        listed = ", ".join(close or networks)
        raise OptionError(
            f"network={name.strip()} is not something I know; {'did you mean' if close else 'try one of'} {listed}"
            f"{'?' if close else '.'}"
        ) from None
    if canonical not in networks:
        instead = f"; try {_or(list(networks))}" if networks else ""
        raise OptionError(f"{canonical} is not installed on this bot{instead}.")
    return canonical


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def describe_modes(networks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The table as plain data, for the web form and help texts; ``networks``: those offered (default all)."""
    described = []
    for spec in MODES.values():
        options = [option.describe() for option in spec.options]
        for option in options:
            if option["name"] == "network" and networks is not None:
                option["choices"] = list(networks)
        described.append(
            {
                "mode": spec.mode.value,
                "help": spec.help,
                "needs_image": spec.needs_image,
                "subject": spec.subject,
                "example": spec.example,
                "options": options,
            }
        )
    return described


def help_text() -> str:
    """A short guide to the grammar, for chat help commands."""
    lines = ["Attach a photo and mention me to dream it. Add a look or options, e.g. `deeper layer=block10 seed=7`."]
    lines.append(f"Looks: {', '.join(PRESETS)}.")
    for spec in MODES.values():
        options = " ".join(f"{o.name}=" for o in spec.options)
        lines.append(f"- {spec.mode}: {spec.help}. e.g. `{spec.example}`; options: {options}")
    return "\n".join(lines)
