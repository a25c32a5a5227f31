"""The drawing commands of `dreamcore`: visualize, mix, path, letters, mask, classes (small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dreamcore.cli import main
from dreamcore.images import read_metadata

SMALL = ("--size", "96x64", "--steps", "4", "--octaves", "1", "--views", "1", "--precision", "fp32", "-q")


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def drawn(capsys, *args: object) -> dict:
    code, _, err = run(capsys, *args)
    assert code == 0, err
    output = Path(str(args[args.index("-o") + 1]))
    metadata = read_metadata(output)
    assert metadata is not None
    with Image.open(output) as image:
        assert image.size == (96, 64)
    return metadata


def test_visualize_stores_mode_class_and_seed(capsys, tmp_path) -> None:
    metadata = drawn(capsys, "visualize", "a banana", "-o", tmp_path / "b.png", "--seed", "4", *SMALL)
    assert metadata["mode"] == "visualize"
    assert metadata["params"]["classes"] == ["banana"]
    assert metadata["settings"]["seed"] == 4 and metadata["settings"]["steps"] == 4


def test_mix_reads_one_phrase_or_several_names(capsys, tmp_path) -> None:
    one = drawn(capsys, "mix", "gorilla and french horn", "-o", tmp_path / "a.png", *SMALL)
    several = drawn(
        capsys,
        "mix",
        "gorilla",
        "French_horn",
        "--layout",
        "above",
        "--weights",
        "1,0.5",
        "-o",
        tmp_path / "b.png",
        *SMALL,
    )
    assert one["params"]["classes"] == several["params"]["classes"] == ["gorilla", "French horn"]
    assert several["params"]["layout"] == "above" and several["params"]["weights"] == [1.0, 0.5]


def test_path_letters_and_mask(capsys, tmp_path) -> None:
    path = drawn(capsys, "path", "jellyfish", "--points", "0.2,0.5 0.8,0.5", "-o", tmp_path / "p.png", *SMALL)
    assert path["params"]["shape"] == "points" and len(path["params"]["points"]) == 2
    text = drawn(capsys, "letters", "AB", "--letter", "B=banana", "-o", tmp_path / "l.png", *SMALL)
    assert text["params"]["classes"] == ["axolotl", "banana"]
    mask_file = tmp_path / "mask.png"
    mask = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(mask).ellipse((20, 10, 76, 54), fill=255)
    mask.save(mask_file)
    masked = drawn(capsys, "mask", "banana", mask_file, "-o", tmp_path / "m.png", *SMALL)
    assert masked["mode"] == "mask"


def test_classes_lists_matches(capsys) -> None:
    code, out, _ = run(capsys, "classes", "shark")
    assert code == 0
    assert "great white shark" in out and "tiger shark" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("visualize", "bananna"), "Did you mean 'banana'"),
        (("visualize", "dog"), "could be any of"),
        (("visualize", "banana", "--size", "big"), "Could not read the size"),
        (("visualize", "banana", "--size", "10x10"), "width and height"),
        (("mix", "gorilla", "banana", "--weights", "1"), "Give 2 positive weights"),
        (("letters", "A7"), "only the letters A to Z"),
        (("letters", "AB", "--letter", "B"), "LETTER=CLASS"),
        (("path", "jellyfish", "--points", "3,3 900,900"), "outside"),
    ],
)
def test_bad_requests_are_one_sentence_and_exit_2(capsys, tmp_path, args, words) -> None:
    out = tmp_path / "x.png"
    code, _, err = run(capsys, *args, "-o", out, "--steps", "1", "--octaves", "1", "-q")
    assert code == 2, err
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_an_unknown_output_format_is_refused_before_drawing(capsys, tmp_path, monkeypatch) -> None:
    import dreamcore.cli

    monkeypatch.setattr(dreamcore.cli, "visualize", lambda *a, **k: pytest.fail("drew before checking the output"))
    code, _, err = run(capsys, "visualize", "banana", "-o", tmp_path / "b.xyz")
    assert code == 2 and ".png" in err
