"""The shared option grammar: chat text and form fields become the same checked commands."""

from __future__ import annotations

import pytest

from bot.options import MODES, Command, Mode, OptionError, build_command, describe_modes, help_text, parse_command
from bot.requests import Destination, DreamRequest, Requester


@pytest.mark.parametrize(
    ("text", "has_image", "mode", "subject", "options"),
    [
        (
            "#deepdream layer=block10 octaves=4 deeper",
            True,
            Mode.DREAM,
            "",
            {"layer": "block10", "octaves": 4, "preset": "deep"},
        ),
        ("<@123456> nightmare seed=7", True, Mode.DREAM, "", {"preset": "nightmare", "seed": 7}),
        ("@DreamBot", True, Mode.DREAM, "", {}),
        ("@DreamBot https://example.org/cat.png deeper", True, Mode.DREAM, "", {"preset": "deep"}),
        ("@bot visualize banana", False, Mode.VISUALIZE, "banana", {}),
        ("visualize french horn size=256", False, Mode.VISUALIZE, "french horn", {"size": 256}),
        ("mix gorilla + french horn layout=above", False, Mode.MIX, "gorilla + french horn", {"layout": "above"}),
        ("path jellyfish shape=line count=8", False, Mode.PATH, "jellyfish", {"shape": "line", "count": 8}),
        ("letters HELLO fill=ape", False, Mode.LETTERS, "HELLO", {"fill": "ape"}),
        ("zoom frames=24 rotate=1.5", True, Mode.ZOOM, "", {"frames": 24, "rotate": 1.5}),
        ("atlas", True, Mode.ATLAS, "", {}),
        (
            "network=googlenet layer=inception_4c",
            True,
            Mode.DREAM,
            "",
            {"network": "googlenet", "layer": "inception_4c"},
        ),
        (
            "layer=block9+0.5*block12 strength=1.5",
            True,
            Mode.DREAM,
            "",
            {"layer": "block9+0.5*block12", "strength": 1.5},
        ),
        ("Layer=BLOCK9", True, Mode.DREAM, "", {"layer": "BLOCK9"}),
    ],
)
def test_chat_text_becomes_a_command(text, has_image, mode, subject, options) -> None:
    command = parse_command(text, has_image=has_image)
    assert command == Command(mode, subject, options)


@pytest.mark.parametrize(
    ("text", "has_image", "says"),
    [
        ("layer=blok9", True, "'block9'"),  # the closest names
        ("layer=inception_4c", True, "googlenet"),  # the network that has it
        ("network=vgg", True, "vgg16"),
        ("octaves=99", True, "between 1 and 8"),
        ("strength=lots", True, "needs a number"),
        ("colour=red", True, "no option 'colour'"),
        ("hello there", True, "don't know what 'hello there' means"),
        ("", False, "Attach a photo"),
        ("visualize", False, "needs a class"),
        ("visualize bananna", False, "'banana'"),
        ("visualize banana and gorilla", False, "use mix"),
        ("mix banana", False, "two classes or more"),
        ("zoom", False, "needs a photo"),
        ("letters !!!", False, "letters or digits"),
        ("path jellyfish shape=square", False, "circle"),
    ],
)
def test_mistakes_get_sentences_with_the_valid_values(text, has_image, says) -> None:
    with pytest.raises(OptionError) as error:
        parse_command(text, has_image=has_image)
    assert says in str(error.value)
    assert str(error.value).endswith((".", "?")), "errors are sentences"


def test_form_fields_are_checked_like_chat_text() -> None:
    assert build_command("dream", "", {"octaves": "3", "preset": "deep", "seed": ""}) == Command(
        Mode.DREAM, "", {"octaves": 3, "preset": "deep"}
    )
    assert build_command("visualise", "  banana ", {}).mode is Mode.VISUALIZE  # aliases, spaces
    with pytest.raises(OptionError, match=r"no mode .drem.\. Did you mean dream"):
        build_command("drem")
    # layers are checked against the network given in the same request, whatever the field order
    assert build_command("dream", "", {"layer": "conv5_2", "network": "vgg16"}).options["layer"] == "conv5_2"


def test_one_description_serves_form_and_help() -> None:
    described = {entry["mode"]: entry for entry in describe_modes()}
    assert set(described) == {mode.value for mode in Mode}
    dream_options = {option["name"]: option for option in described["dream"]["options"]}
    assert dream_options["octaves"]["min"] == 1 and dream_options["octaves"]["max"] == 8
    assert "deep" in dream_options["preset"]["choices"] and "block9" in dream_options["layer"]["choices"]
    assert described["visualize"]["needs_image"] is False and described["zoom"]["needs_image"] is True
    text = help_text()
    assert all(f"- {mode.value}:" in text for mode in Mode)
    assert all(spec.example for spec in MODES.values())


def test_requests_travel_as_json_without_image_bytes_and_fingerprint_their_content() -> None:
    command = parse_command("deeper seed=3", has_image=True)
    request = DreamRequest(
        command, Requester("discord", "42", "Ada"), Destination("discord", {"channel": 7}), image=b"x"
    )
    stored = request.with_image_key("ab" * 32 + ".png")
    again = DreamRequest.from_json(stored.to_json())
    assert again == stored and again.image is None and "x" not in stored.to_json().replace("ex", "")
    assert again.requester.key == "discord:42"
    same = DreamRequest(command, Requester("web", "other"), Destination("web"), image_key=stored.image_key)
    assert same.fingerprint() == stored.fingerprint()  # who asks does not change the picture
    reseeded = DreamRequest(parse_command("deeper seed=4", has_image=True), stored.requester, stored.destination)
    assert reseeded.with_image_key(stored.image_key).fingerprint() != stored.fingerprint()
    other_image = stored.with_image_key("cd" * 32 + ".png")
    assert other_image.fingerprint() != stored.fingerprint()
