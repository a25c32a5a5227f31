"""Class names as people type them: "a banana", "French_horn", "great white shark", "#534", "dog".

:func:`find_class` turns one such name into a :class:`ClassLabel` or explains, in a sentence, why it
cannot (no such class, or several fit); :func:`search_classes` ranks candidates for autocomplete and
never raises; :func:`parse_class_list` reads "gorilla and french horn"; :data:`ALPHABET` gives every
letter a class to dream it with.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from dreamcore.errors import UnknownNameError, UsageError
from dreamcore.networks.labels import ClassLabel, imagenet_classes, imagenet_labels

__all__ = [
    "ALPHABET",
    "AmbiguousClassError",
    "alphabet_class",
    "class_labels",
    "find_class",
    "parse_class_list",
    "search_classes",
    "split_weight",
]

# One class a letter, chosen to be recognisable when dreamt: animals where the letter has a good one.
# ImageNet has no class whose name starts with X; "xylophone" is a synonym of "marimba".
ALPHABET: dict[str, str] = {
    "A": "axolotl",
    "B": "brown bear",
    "C": "cheetah",
    "D": "dalmatian",
    "E": "European fire salamander",
    "F": "flamingo",
    "G": "giant panda",
    "H": "hummingbird",
    "I": "Indian cobra",
    "J": "jellyfish",
    "K": "koala",
    "L": "ladybug",
    "M": "macaw",
    "N": "Norwegian elkhound",
    "O": "ostrich",
    "P": "peacock",
    "Q": "quail",
    "R": "red fox",
    "S": "starfish",
    "T": "tiger",
    "U": "umbrella",
    "V": "vulture",
    "W": "warthog",
    "X": "xylophone",
    "Y": "Yorkshire terrier",
    "Z": "zebra",
}

_SHOWN_CANDIDATES = 8
_INDEX = re.compile(r"#?\s*([-+]?\d+)")
_ARTICLE = re.compile(r"(?:a|an|the)\s+(.+)", re.IGNORECASE)
_IRREGULAR_PLURALS = {"mice": "mouse", "geese": "goose", "wolves": "wolf", "oxen": "ox", "knives": "knife"}
_SEPARATOR = re.compile(r"(\s*[,;&+]\s*|\s+and\s+)", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WEIGHT_AFTER = re.compile(rf"(.*?)\s*:\s*({_NUMBER})")
_WEIGHT_BEFORE = re.compile(rf"({_NUMBER})\s*\*\s*(.*)")


class AmbiguousClassError(UsageError):
    """A name that fits several classes; ``candidates`` lists them, likeliest first."""

    def __init__(self, query: str, candidates: Sequence[ClassLabel]) -> None:
        self.query = query
        self.candidates = list(candidates)
        shown = ", ".join(repr(c.name) for c in self.candidates[:_SHOWN_CANDIDATES])
        more = len(self.candidates) - _SHOWN_CANDIDATES
        if more > 0:
            shown += f" and {more} more"
        super().__init__(f"{query!r} could be any of: {shown}. Say which one, e.g. {self.candidates[0].name!r}.")


def _clean(text: str) -> str:
    """Spacing, underscores, hyphens and apostrophes forgiven; case kept (it breaks one tie, see _exact)."""
    text = text.replace("’", "").replace("'", "").replace("_", " ").replace("-", " ")
    return " ".join(text.split()).strip('" ')


def _compact(key: str) -> str:
    return key.replace(" ", "")


@dataclass(frozen=True)
class _Catalog:
    classes: tuple[ClassLabel, ...]
    # lower-cased cleaned name -> {class index: rank}; rank is the name's place in synonyms, 0 = display name
    exact: dict[str, dict[int, int]]
    compact: dict[str, dict[int, int]]
    # every (key, rank, class) once, for the scans of word matching and search
    names: tuple[tuple[str, int, ClassLabel], ...]


@functools.lru_cache(maxsize=8)
def _catalog(labels: tuple[str, ...] | None) -> _Catalog:
    if labels is None or list(labels) == imagenet_labels():
        classes = imagenet_classes()
    else:
        classes = tuple(ClassLabel(i, label, (label,)) for i, label in enumerate(labels))
    exact: dict[str, dict[int, int]] = {}
    compact: dict[str, dict[int, int]] = {}
    names = []
    for label in classes:
        seen = set()
        for rank, synonym in enumerate(label.synonyms):
            key = _clean(synonym).lower()
            if not key or key in seen:
                continue
            seen.add(key)
            names.append((key, rank, label))
            exact.setdefault(key, {}).setdefault(label.index, rank)
            compact.setdefault(_compact(key), {}).setdefault(label.index, rank)
    return _Catalog(classes, exact, compact, tuple(names))


def _lookup(labels: Sequence[str] | None) -> _Catalog:
    return _catalog(None if labels is None else tuple(labels))


def class_labels(labels: Sequence[str] | None = None) -> tuple[ClassLabel, ...]:
    """The classes a network knows: ImageNet's with their synonyms, or one per label of a custom network."""
    return _lookup(labels).classes


def _variants(text: str) -> Iterator[str]:
    """``text`` as typed, then without a leading article, each followed by its singular guesses."""
    bases = [text]
    if article := _ARTICLE.fullmatch(text):
        bases.append(article.group(1))
    for base in bases:
        yield base
        head, _, last = base.rpartition(" ")
        low = last.lower()
        singulars = []
        if low in _IRREGULAR_PLURALS:
            singulars.append(_IRREGULAR_PLURALS[low])
        if low.endswith("ies") and len(low) > 4:
            singulars.append(last[:-3] + "y")
        if low.endswith("es") and len(low) > 3:
            singulars.append(last[:-2])
        if low.endswith("s") and not low.endswith("ss") and len(low) > 2:
            singulars.append(last[:-1])
        for singular in singulars:
            yield f"{head} {singular}" if head else singular


def _exact(catalog: _Catalog, text: str) -> list[ClassLabel]:
    """Classes that have ``text`` as a name; where several do, those naming it earliest among their synonyms."""
    key = text.lower()
    hits = catalog.exact.get(key) or catalog.compact.get(_compact(key))
    if not hits:
        return []
    best = min(hits.values())
    found = [catalog.classes[i] for i, rank in hits.items() if rank == best]
    if len(found) > 1:
        # "Cardigan" (the corgi) and "cardigan" (the sweater) differ only by case
        same_case = [label for label in found if label.name == text]
        found = same_case or found
    return found


def _word_matches(catalog: _Catalog, key: str) -> list[ClassLabel]:
    """Classes with a name holding every word of ``key`` as a whole word, best first."""
    words = set(key.split())
    scores: dict[int, tuple[int, int, int]] = {}
    for name, rank, label in catalog.names:
        if words <= set(name.split()):
            score = (rank, len(label.name), label.index)
            scores[label.index] = min(score, scores.get(label.index, score))
    return [catalog.classes[i] for i in sorted(scores, key=scores.__getitem__)]


def _index(catalog: _Catalog, number: int) -> ClassLabel:
    last = len(catalog.classes) - 1
    if not 0 <= number <= last:
        raise UsageError(f"There is no class {number}: class numbers go from 0 to {last}.")
    return catalog.classes[number]


def find_class(query: str | int, labels: Sequence[str] | None = None) -> ClassLabel:
    """The class ``query`` names: a number, a name or synonym, or words that fit only one class.

    Case, underscores, hyphens, extra spaces, a leading "a"/"an"/"the" and a plural are forgiven.
    Raises :class:`AmbiguousClassError` when several classes fit and :class:`UnknownNameError` (with the
    closest names) when none does.
    """
    catalog = _lookup(labels)
    if isinstance(query, int):
        return _index(catalog, query)
    text = _clean(query)
    last = len(catalog.classes) - 1
    if not text:
        example = catalog.classes[0].name if labels is not None else "gorilla"
        raise UsageError(f"No class given: type a class name such as {example!r}, or a number from 0 to {last}.")
    number = _INDEX.fullmatch(query.strip())
    # a bare number is a label first: a custom network's labels may be numbers
    if number and (query.strip().startswith("#") or not _exact(catalog, text)):
        return _index(catalog, int(number.group(1)))
    variants = list(dict.fromkeys(_variants(text)))
    for variant in variants:
        found = _exact(catalog, variant)
        if len(found) == 1:
            return found[0]
        if found:
            raise AmbiguousClassError(query.strip(), found)
    for variant in variants:
        if len(variant) < 2:  # a lone letter is a word of too many names to mean anything
            continue
        found = _word_matches(catalog, variant.lower())
        if len(found) == 1:
            return found[0]
        if found:
            raise AmbiguousClassError(query.strip(), found)
    suggestions = [label.name for label in search_classes(query, labels, limit=5)]
    raise UnknownNameError("class", query.strip(), suggestions, f"Use a class name, or a number from 0 to {last}.")


def search_classes(query: str, labels: Sequence[str] | None = None, limit: int = 25) -> list[ClassLabel]:
    """Classes for autocomplete, best first: exact names, then prefixes, whole words, substrings, near misses."""
    catalog = _lookup(labels)
    if limit <= 0:
        return []
    text = _clean(query)
    if not text:
        return list(catalog.classes[:limit])
    key = text.lower()
    exact_keys = {variant.lower() for variant in _variants(text)}
    exact_keys |= {_compact(k) for k in exact_keys}
    words = set(key.split())
    scores: dict[int, tuple[int, ...]] = {}

    def offer(label: ClassLabel, score: tuple[int, ...]) -> None:
        scores[label.index] = min(score, scores.get(label.index, score))

    number = _INDEX.fullmatch(query.strip())
    if number and 0 <= int(number.group(1)) < len(catalog.classes):
        offer(catalog.classes[int(number.group(1))], (-1,))
    for name, rank, label in catalog.names:
        if name in exact_keys or _compact(name) in exact_keys:
            tier = 0
        elif name.startswith(key):
            tier = 1
        elif f" {key}" in f" {name}" or words <= set(name.split()):
            tier = 2
        elif key in name or _compact(key) in _compact(name):
            tier = 3
        else:
            continue
        # the rank decides exact ties as find_class does; elsewhere display names first, then shorter names
        offer(label, (tier, rank if tier == 0 else int(rank > 0), len(name), rank, label.index))
    if len(scores) < limit:
        keys = list(catalog.exact)
        for place, close in enumerate(difflib.get_close_matches(key, keys, n=2 * limit, cutoff=0.6)):
            for index in catalog.exact[close]:
                offer(catalog.classes[index], (4, place, index))
    ranked = sorted(scores, key=scores.__getitem__)
    return [catalog.classes[i] for i in ranked[:limit]]


def split_weight(part: str) -> tuple[str, float]:
    """``"gorilla:0.7"`` or ``"0.7*gorilla"`` -> ``("gorilla", 0.7)``; a bare name weighs 1."""
    part = part.strip()
    if match := _WEIGHT_AFTER.fullmatch(part):
        return match.group(1).strip(), float(match.group(2))
    if match := _WEIGHT_BEFORE.fullmatch(part):
        return match.group(2).strip(), float(match.group(1))
    if ":" in part:
        name, _, weight = part.rpartition(":")
        raise UsageError(
            f"Could not read the weight {weight.strip()!r} in {part!r}: put a number after the colon, "
            f"e.g. '{name.strip()}:0.5'."
        )
    return part, 1.0


def parse_class_list(text: str, labels: Sequence[str] | None = None) -> list[ClassLabel]:
    """The classes in "gorilla and french horn", "gibbon & poncho", "gorilla, banana:0.5" (weights are dropped).

    Names that themselves hold a separator ("black and gold garden spider") are kept whole.
    """
    catalog = _lookup(labels)
    pieces = _SEPARATOR.split(text)
    parts, separators = pieces[0::2], pieces[1::2]
    found: list[ClassLabel] = []
    i = 0
    while i < len(parts):
        # longest run of parts that together are one class's exact name
        for j in range(len(parts), i + 1, -1):
            joined = parts[i] + "".join(separators[k] + parts[k + 1] for k in range(i, j - 1))
            name = _clean(split_weight(joined)[0]) if ":" in joined or "*" in joined else _clean(joined)
            exact = _exact(catalog, name) if name else []
            if len(exact) == 1:
                found.append(exact[0])
                i = j
                break
        else:
            name = split_weight(parts[i])[0]
            if name.strip():
                found.append(find_class(name, labels))
            i += 1
    if not found:
        raise UsageError(f"No classes in {text.strip()!r}: name them like 'gorilla and french horn'.")
    return found


def alphabet_class(
    letter: str, overrides: Mapping[str, str] | None = None, labels: Sequence[str] | None = None
) -> ClassLabel:
    """The class that draws ``letter``: from ``overrides`` (any character) if given there, else :data:`ALPHABET`."""
    if len(letter) != 1:
        raise UsageError(f"Expected one character, not {letter!r}.")
    for key, name in (overrides or {}).items():
        if key.upper() == letter.upper():
            return find_class(name, labels)
    if letter.upper() not in ALPHABET:
        raise UsageError(
            f"There is no class for {letter!r}: only the letters A to Z have classes, "
            "so leave it out or choose a class for it."
        )
    if labels is not None and _lookup(labels).classes is not imagenet_classes():
        raise UsageError(
            f"The alphabet classes are ImageNet classes, and this network has its own labels: "
            f"give {letter.upper()!r} a class with an override."
        )
    return find_class(ALPHABET[letter.upper()])
