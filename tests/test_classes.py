"""Class names as people type them: lookup, ambiguity, suggestions, search, lists and the alphabet."""

from __future__ import annotations

import string

import pytest

from dreamcore.classes import (
    ALPHABET,
    AmbiguousClassError,
    alphabet_class,
    class_labels,
    find_class,
    parse_class_list,
    search_classes,
    split_weight,
)
from dreamcore.errors import UnknownNameError, UsageError
from dreamcore.networks.labels import imagenet_classes, imagenet_labels

PLACES = ["airfield", "bus interior", "Airport terminal"]


def test_imagenet_classes_come_with_synonyms_and_custom_labels_with_themselves() -> None:
    assert class_labels() == imagenet_classes()
    assert class_labels(imagenet_labels()) == imagenet_classes()
    custom = class_labels(PLACES)
    assert [(c.index, c.name, c.synonyms) for c in custom][1] == (1, "bus interior", ("bus interior",))


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("French horn", 566),
        ("french_horn", 566),
        ("  FRENCH-horn ", 566),
        ("frenchhorn", 566),
        ("horn", 566),  # a synonym of French horn and of cornet; French horn names it sooner
        ("Gorilla", 366),
        ("great white shark", 2),
        ("man-eater", 2),  # a WordNet synonym
        ("pig", 341),
        ("tiger", 292),  # its own class beats "tiger shark" and "tiger cat"
        ("volcano", 980),
        ("panda", 388),
        ("jack o lantern", 607),
        ("Cardigan", 264),  # the corgi; the sweater is "cardigan"
        ("cardigan", 474),
    ],
)
def test_names_and_synonyms(query: str, index: int) -> None:
    assert find_class(query).index == index


@pytest.mark.parametrize("query", ["566", 566, "#566", "# 566"])
def test_numbers_are_indices(query: str | int) -> None:
    assert find_class(query).name == "French horn"


@pytest.mark.parametrize("query", ["1000", 1000, "-1", "#1000"])
def test_indices_out_of_range_give_the_range(query: str | int) -> None:
    with pytest.raises(UsageError, match="from 0 to 999"):
        find_class(query)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("bananas", "banana"),
        ("a banana", "banana"),
        ("an axolotl", "axolotl"),
        ("the gorillas", "gorilla"),
        ("strawberries", "strawberry"),
        ("jellyfishes", "jellyfish"),
        ("sunglasses", "sunglasses"),  # a name ending in s stays itself
        ("ambulance", "ambulance"),
        ("penguin", "king penguin"),  # the only class with the word
        ("eagle", "bald eagle"),
    ],
)
def test_plurals_articles_and_single_word_matches(query: str, name: str) -> None:
    assert find_class(query).name == name


@pytest.mark.parametrize(
    ("query", "some"),
    [
        ("dog", {"Eskimo dog", "Bernese mountain dog"}),
        ("cat", {"Persian cat", "Siamese cat", "tiger cat"}),
        ("shark", {"great white shark", "tiger shark", "hammerhead"}),
        ("retrievers", {"golden retriever", "Labrador retriever"}),
        ("crane", {"crane bird", "construction crane"}),  # both have "crane" as their first synonym
    ],
)
def test_words_of_several_classes_are_ambiguous(query: str, some: set[str]) -> None:
    with pytest.raises(AmbiguousClassError) as caught:
        find_class(query)
    names = {c.name for c in caught.value.candidates}
    assert some <= names
    message = str(caught.value)
    assert message.startswith(f"{query!r} could be any of: ")
    assert f"Say which one, e.g. {caught.value.candidates[0].name!r}." in message
    assert isinstance(caught.value, UsageError)


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(UnknownNameError) as caught:
        find_class("bananna")
    assert caught.value.suggestions[0] == "banana"
    assert "Did you mean 'banana'" in str(caught.value)
    with pytest.raises(UnknownNameError, match="Unknown class 'xyzzy'"):
        find_class("xyzzy")


@pytest.mark.parametrize("query", ["", "   ", "_"])
def test_empty_queries_say_what_to_type(query: str) -> None:
    with pytest.raises(UsageError, match="No class given"):
        find_class(query)


def test_custom_labels() -> None:
    assert find_class("Airfields", PLACES).index == 0
    assert find_class("bus", PLACES).name == "bus interior"
    assert find_class("#2", PLACES).name == "Airport terminal"
    with pytest.raises(UsageError, match="from 0 to 2"):
        find_class(3, PLACES)
    with pytest.raises(UnknownNameError):
        find_class("gorilla", PLACES)
    assert find_class("2", ["1", "2", "3"]).index == 1  # a label that is a number is a label first


def test_search_ranks_exact_then_prefix_then_word_then_substring_then_fuzzy() -> None:
    assert search_classes("gor")[0].name == "gorilla"
    assert search_classes("tiger", limit=3)[0].name == "tiger"
    retrievers = [c.name for c in search_classes("ret", limit=8)]
    assert retrievers[0] == "golden retriever"
    assert retrievers.index("Labrador retriever") < retrievers.index("pretzel")  # word before substring
    assert search_classes("bananna")[0].name == "banana"
    assert search_classes("566")[0].name == "French horn"
    assert search_classes("horn")[0].name == find_class("horn").name


def test_search_never_raises() -> None:
    assert [c.index for c in search_classes("")] == list(range(25))
    assert len(search_classes("  ", limit=3)) == 3
    assert search_classes("xyzzyq") == []
    assert search_classes("dog", limit=0) == []
    assert len(search_classes("a", limit=10)) == 10


@pytest.mark.parametrize(
    "text",
    [
        "gorilla and french horn",
        "gorilla, french horn",
        "gorilla + french horn",
        "Gorilla;French_Horn",
        "gorilla,french horn,",
    ],
)
def test_parse_class_list_splits(text: str) -> None:
    assert [c.name for c in parse_class_list(text)] == ["gorilla", "French horn"]


def test_parse_class_list_keeps_names_with_separators_and_ignores_weights() -> None:
    assert [c.name for c in parse_class_list("gibbon & poncho")] == ["gibbon", "poncho"]
    names = [c.name for c in parse_class_list("black and gold garden spider and black-and-tan coonhound, 5")]
    assert names == ["black and gold garden spider", "black-and-tan coonhound", "electric ray"]
    assert [c.name for c in parse_class_list("gorilla:0.7, banana:0.3")] == ["gorilla", "banana"]
    assert [c.name for c in parse_class_list("0.7*gorilla + 0.3*banana")] == ["gorilla", "banana"]
    with pytest.raises(AmbiguousClassError):
        parse_class_list("gorilla and dog")
    with pytest.raises(UsageError, match="No classes"):
        parse_class_list(" , ")


def test_split_weight() -> None:
    assert split_weight("gorilla") == ("gorilla", 1.0)
    assert split_weight(" gorilla : 0.7 ") == ("gorilla", 0.7)
    assert split_weight("great white shark:-1e-1") == ("great white shark", -0.1)
    assert split_weight("2*banana") == ("banana", 2.0)
    with pytest.raises(UsageError, match="put a number after the colon"):
        split_weight("gorilla:lots")


def test_alphabet_has_a_class_for_every_letter() -> None:
    assert sorted(ALPHABET) == list(string.ascii_uppercase)
    for letter, name in ALPHABET.items():
        assert name[0].upper() == letter
        label = find_class(name)
        assert label.name.lower() == name.lower() or letter == "X"  # ImageNet's only X is marimba's synonym
    assert find_class(ALPHABET["X"]).name == "marimba"
    assert len({find_class(name).index for name in ALPHABET.values()}) == 26


def test_alphabet_class() -> None:
    assert alphabet_class("z").name == "zebra"
    assert alphabet_class("Z").name == "zebra"
    assert alphabet_class("a", {"A": "ant"}).name == "ant"
    assert alphabet_class("7", {"7": "one-piece bathing suit"}).index == 639
    for character in ["7", "?", " "]:
        with pytest.raises(UsageError, match="only the letters A to Z"):
            alphabet_class(character)
    with pytest.raises(UsageError, match="one character"):
        alphabet_class("ab")
    with pytest.raises(UsageError, match="own labels"):
        alphabet_class("a", labels=PLACES)
    assert alphabet_class("a", {"a": "airfield"}, labels=PLACES).index == 0
