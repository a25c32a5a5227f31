"""Class labels: the packaged ImageNet-1k names with their synonyms, or a user's labels file."""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dreamcore.errors import WeightsError


@dataclass(frozen=True)
class ClassLabel:
    index: int
    name: str  # what we show: WordNet's first synonym, or the plain name where that is ambiguous
    synonyms: tuple[str, ...]  # every name that should find this class


@functools.cache
def imagenet_classes() -> tuple[ClassLabel, ...]:
    text = resources.files("dreamcore.networks").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    firsts = collections.Counter(row[2].split(", ")[0] for row in rows)
    classes = []
    for index, plain, wordnet in rows:
        synonyms = wordnet.split(", ")
        name = synonyms[0] if firsts[synonyms[0]] == 1 else plain
        classes.append(ClassLabel(int(index), name, tuple(dict.fromkeys([name, plain, *synonyms]))))
    return tuple(classes)


def imagenet_labels() -> list[str]:
    return [label.name for label in imagenet_classes()]


def read_labels_file(path: str | Path) -> list[str]:
    """One label a line. Places365-style lines (``/a/airfield 0``) become ``airfield``."""
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except OSError as error:
        raise WeightsError(f"Could not read the labels file {path}: {error.strerror}.") from error
    labels = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("/"):
            line = line.split()[0].split("/", 2)[-1].replace("/", " ").replace("_", " ")
        labels.append(line)
    if not labels:
        raise WeightsError(f"The labels file {path} has no labels in it.")
    return labels
