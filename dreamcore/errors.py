"""Errors a person can act on.

Every exception raised on purpose by dreamcore derives from :class:`DreamError`; its ``str()`` is a
sentence that says what went wrong and what to do next, so the command line and the bot can show it
as it is. ``exit_code`` is what the command line exits with.
"""

from __future__ import annotations


class DreamError(Exception):
    """Base class: a problem with the request or the environment, explained in words."""

    exit_code = 1


class UsageError(DreamError):
    """Wrong options: an unknown layer, network, preset or class, or a value out of range."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A name that is not in a catalog; lists the closest valid names."""

    def __init__(self, kind: str, name: str, suggestions: list[str], hint: str = "") -> None:
        self.kind = kind
        self.name = name
        self.suggestions = suggestions
        message = f"Unknown {kind} {name!r}."
        if suggestions:
            message += " Did you mean " + ", ".join(repr(s) for s in suggestions) + "?"
        if hint:
            message += " " + hint
        super().__init__(message)


class ImageError(DreamError):
    """An image that cannot be read or is too large."""

    exit_code = 3


class WeightsError(DreamError):
    """Network weights that are missing, corrupt or cannot be downloaded."""

    exit_code = 4


class Cancelled(DreamError):
    """The caller asked the render to stop."""

    exit_code = 130

    def __init__(self, message: str = "The dream was cancelled.") -> None:
        super().__init__(message)
