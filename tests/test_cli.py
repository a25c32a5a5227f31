"""The ``dreamcore`` command, run in-process on small photos with the packaged lite0 (and once as a real command).

Every test gets an empty weights cache and DREAMCORE_OFFLINE=1, so nothing reads the user's cache or the network,
and runs on the CPU, where fp32 dreams with a fixed seed are exactly repeatable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dreamcore.cli
import dreamcore.networks as networks
from dreamcore.atlas import GAP, LABEL_HEIGHT
from dreamcore.cli import main
from dreamcore.images import read_metadata
from dreamcore.settings import PRESETS

DATA = Path(__file__).parent / "data"
FAST = ("--octaves", "2", "--iterations", "2", "--precision", "fp32")
PACKAGED = ("lite0", "lite1", "lite2")
CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache, no downloads, CPU only."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DREAMCORE_CACHE", str(folder))
    monkeypatch.setenv("DREAMCORE_OFFLINE", "1")
    monkeypatch.setenv("DREAMCORE_DEVICE", "cpu")
    monkeypatch.delenv("DREAMCORE_WEIGHTS_URL", raising=False)
    # Keep the packaged networks built (they do not depend on the cache) but forget any other network another
    # test file built from its own cache, so "googlenet is not downloaded" really means that here.
    for key in [key for key in networks._cache if key[0] not in PACKAGED]:
        del networks._cache[key]
    return folder


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """chelsea.png (the cat) scaled down to 96x64, so a dream takes a fraction of a second."""
    path = tmp_path_factory.mktemp("input") / "chelsea-96x64.png"
    with Image.open(DATA / "chelsea.png") as image:
        image.convert("RGB").resize((96, 64), Image.Resampling.LANCZOS).save(path)
    return path


def run(capsys, *args: object) -> tuple[int, str, str]:
    """``dreamcore ARGS`` in-process: (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def dream_ok(capsys, *args: object) -> str:
    """A dream that must succeed; its stdout."""
    code, out, err = run(capsys, "dream", *args)
    assert code == 0, err
    return out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def stored_settings(path: Path) -> dict:
    metadata = read_metadata(path)
    assert metadata is not None, f"{path} holds no dreamcore metadata"
    return metadata["settings"]


def assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert err.startswith("dreamcore: ")
    assert err.count("\n") == 1, f"expected one line on stderr, got {err!r}"


# --- dreaming ----------------------------------------------------------------------------------------


def test_dream_writes_a_changed_picture_of_the_same_size_with_its_settings(capsys, photo, tmp_path) -> None:
    out = tmp_path / "dreamed.png"
    dream_ok(capsys, photo, "-o", out, "--seed", "5", *FAST, "-q")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (96, 64)
    change = np.abs(pixels(out) - pixels(photo)).mean()
    assert change > 1.0, f"the dream barely changed the photo (mean change {change:.2f} levels)"
    settings = stored_settings(out)
    assert settings["seed"] == 5
    assert settings["network"] == "lite0"
    assert settings["objective"] == PRESETS["default"].layers["lite0"]
    assert settings["preset"] == "default"
    assert (settings["octaves"], settings["iterations"], settings["precision"]) == (2, 2, "fp32")


def test_print_settings_prints_the_stored_settings_as_json(capsys, photo, tmp_path) -> None:
    out = tmp_path / "dreamed.png"
    printed = dream_ok(capsys, photo, "-o", out, "--seed", "5", *FAST, "--print-settings", "-q")
    settings = json.loads(printed)
    assert settings == stored_settings(out)
    assert settings["seed"] == 5 and settings["objective"] == PRESETS["default"].layers["lite0"]


def test_a_result_reproduces_pixel_for_pixel_from_its_png(capsys, photo, tmp_path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    dream_ok(capsys, photo, "-o", first, "--seed", "11", *FAST, "-q")
    dream_ok(capsys, photo, "-o", again, "--settings", first, "--precision", "fp32", "-q")
    assert np.array_equal(pixels(again), pixels(first))
    assert stored_settings(again) == stored_settings(first)


def test_a_result_reproduces_from_the_json_that_dreamcore_settings_prints(capsys, photo, tmp_path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    dream_ok(capsys, photo, "-o", first, "--seed", "12", *FAST, "-q")
    code, printed, err = run(capsys, "settings", first)
    assert code == 0, err
    settings_file = tmp_path / "a.json"
    settings_file.write_text(printed, "utf-8")
    assert json.loads(printed)["settings"]["seed"] == 12
    dream_ok(capsys, photo, "-o", again, "--settings", settings_file, "--precision", "fp32", "-q")
    assert np.array_equal(pixels(again), pixels(first))


def test_an_unseeded_dream_records_the_seed_it_picked(capsys, photo, tmp_path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    dream_ok(capsys, photo, "-o", first, *FAST, "-q")
    seed = stored_settings(first)["seed"]
    assert isinstance(seed, int) and seed >= 0
    dream_ok(capsys, photo, "-o", again, "--seed", seed, *FAST, "-q")
    assert np.array_equal(pixels(again), pixels(first))


@pytest.mark.parametrize(
    ("options", "objective"),
    [
        (["-l", "block3", "--channels", "1,2"], "block3:1,2"),
        (["-l", "block3", "-l", "0.5*block5"], "block3+0.5*block5"),
    ],
    ids=["channels", "weighted-sum"],
)
def test_layer_options_become_the_stored_objective(capsys, photo, tmp_path, options, objective) -> None:
    out = tmp_path / "dreamed.png"
    dream_ok(capsys, photo, "-o", out, "--seed", "1", *FAST, "-q", *options)
    assert stored_settings(out)["objective"] == objective


def test_a_preset_chooses_the_layer_octaves_and_step(capsys, photo, tmp_path) -> None:
    out = tmp_path / "subtle.png"
    subtle = PRESETS["subtle"]
    dream_ok(capsys, photo, "-o", out, "--preset", "subtle", "--iterations", "2", "--precision", "fp32", "-q")
    settings = stored_settings(out)
    assert settings["preset"] == "subtle"
    assert settings["objective"] == subtle.layers["lite0"] == "block3"
    assert settings["octaves"] == subtle.values["octaves"]
    assert settings["step"] == subtle.values["step"]
    assert settings["iterations"] == 2  # an option given on the command line wins over the preset


@pytest.mark.parametrize(("suffix", "pil_format"), [(".jpg", "JPEG"), (".webp", "WEBP")])
def test_jpeg_and_webp_outputs_carry_the_settings(capsys, photo, tmp_path, suffix, pil_format) -> None:
    out = tmp_path / f"dreamed{suffix}"
    dream_ok(capsys, photo, "-o", out, "--seed", "7", *FAST, "-q")
    with Image.open(out) as image:
        assert image.format == pil_format
        assert image.size == (96, 64)
    settings = stored_settings(out)
    assert settings["seed"] == 7 and settings["network"] == "lite0"


def test_an_unknown_output_format_exits_2_naming_the_supported_ones(capsys, photo, tmp_path) -> None:
    out = tmp_path / "dreamed.xyz"
    code, stdout, err = run(capsys, "dream", photo, "-o", out, "--seed", "1", *FAST, "-q")
    assert code == 2
    assert_one_line_error(err)
    assert ".xyz" in err
    assert all(suffix in err for suffix in (".png", ".jpg", ".webp"))
    assert stdout == ""
    assert [path.name for path in tmp_path.iterdir() if path.name != "cache"] == []  # no output, no partial file


def test_an_unknown_output_format_is_refused_before_dreaming(capsys, photo, tmp_path, monkeypatch) -> None:
    calls = []
    real_dream = dreamcore.cli.dream

    def counting_dream(*args, **kwargs):
        calls.append(args)
        return real_dream(*args, **kwargs)

    monkeypatch.setattr(dreamcore.cli, "dream", counting_dream)
    code, _, err = run(capsys, "dream", photo, "-o", tmp_path / "dreamed.xyz", *FAST, "-q")
    assert code == 2, err
    assert calls == [], "a dream that cannot be saved was computed anyway"


def test_quiet_leaves_stderr_and_stdout_empty(capsys, photo, tmp_path) -> None:
    out = tmp_path / "dreamed.png"
    code, stdout, err = run(capsys, "dream", photo, "-o", out, "--seed", "2", *FAST, "-q")
    assert code == 0
    assert out.is_file()
    assert (stdout, err) == ("", "")


def test_without_quiet_a_progress_bar_and_summary_go_to_stderr(capsys, photo, tmp_path) -> None:
    out = tmp_path / "dreamed.png"
    code, stdout, err = run(capsys, "dream", photo, "-o", out, "--seed", "2", *FAST)
    assert code == 0
    assert stdout == ""  # stdout stays clean for --print-settings and pipes
    assert "dreaming" in err  # the progress bar
    summary = err.strip().splitlines()[-1].split("\r")[-1].strip()
    layer = PRESETS["default"].layers["lite0"]
    assert summary.startswith(f"Wrote {out} (96x64, lite0 {layer}, seed 2)"), summary


# --- errors ------------------------------------------------------------------------------------------


def make_input(kind: str, photo: Path, folder: Path) -> Path:
    """The input file for an error case."""
    if kind == "photo":
        return photo
    names = {"text": "notes.txt", "missing": "missing.png", "one-byte": "one.png", "truncated": "half.png"}
    path = folder / names[kind]
    if kind == "text":
        path.write_text("not a picture\n", "utf-8")
    elif kind == "one-byte":
        path.write_bytes(b"\x89")
    elif kind == "truncated":
        data = photo.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "options", "exit_code", "words"),
    [
        ("photo", ["-l", "blok3"], 2, ["'blok3'", "Did you mean", "'block3'"]),
        ("photo", ["-n", "nosuchnet"], 2, ["'nosuchnet'", "dreamcore models"]),
        ("photo", ["-p", "nosuchpreset"], 2, ["'nosuchpreset'", "subtle", "default"]),
        ("photo", ["--octave-scale", "9"], 2, ["octave scale", "9"]),
        ("photo", ["--step", "0"], 2, ["step", "above 0"]),
        ("photo", ["--channels", "1,2"], 2, ["--channels", "--layer"]),
        ("photo", ["-l", "block3", "--channels", "999"], 2, ["block3", "999", "0 to 39"]),
        ("text", [], 3, ["notes.txt", "not an image"]),
        ("missing", [], 3, ["missing.png", "Cannot find"]),
        ("one-byte", [], 3, ["one.png", "not an image"]),
        ("truncated", [], 3, ["half.png", "damaged"]),
    ],
    ids=[
        "unknown-layer", "unknown-network", "unknown-preset", "octave-scale", "step", "channels-without-layer",
        "channel-out-of-range", "text-file", "missing-file", "one-byte-png", "truncated-png",
    ],
)  # fmt: skip
def test_errors_are_one_line_with_a_meaningful_exit_code(
    capsys, photo, tmp_path, kind, options, exit_code, words
) -> None:
    source = make_input(kind, photo, tmp_path)
    out = tmp_path / "dreamed.png"
    code, stdout, err = run(capsys, "dream", source, "-o", out, *FAST, *options)
    assert code == exit_code, err
    assert_one_line_error(err)
    for word in words:
        assert word in err
    assert stdout == ""
    assert not out.exists()


def test_a_classic_network_missing_offline_names_the_cache_path_and_the_import_command(
    capsys, photo, tmp_path, cache
) -> None:
    out = tmp_path / "dreamed.png"
    code, _, err = run(capsys, "dream", photo, "-o", out, "-n", "googlenet", *FAST)
    assert code == 4, err
    assert_one_line_error(err)
    assert str(cache / "weights" / "googlenet-1378be20.pth") in err
    assert "dreamcore models import" in err
    assert "DREAMCORE_OFFLINE" in err
    assert not out.exists()
    assert not (cache / "weights" / "googlenet-1378be20.pth").exists()


def test_the_unknown_layer_message_suggests_the_close_name_first(capsys, photo, tmp_path) -> None:
    code, _, err = run(capsys, "dream", photo, "-o", tmp_path / "x.png", *FAST, "-l", "blok3")
    assert code == 2
    assert re.search(r"Did you mean 'block3'", err), err


def test_a_settings_json_that_is_not_an_object_is_a_usage_error(capsys, photo, tmp_path) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text("[1, 2]", "utf-8")
    code, _, err = run(capsys, "dream", photo, "-o", tmp_path / "x.png", "--settings", settings_file, *FAST)
    assert code == 2, err
    assert_one_line_error(err)
    assert "settings.json" in err


def test_a_settings_json_with_a_wrongly_typed_value_is_a_usage_error(capsys, photo, tmp_path) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text('{"octaves": "3", "iterations": 1, "seed": 1}', "utf-8")
    code, _, err = run(capsys, "dream", photo, "-o", tmp_path / "x.png", "--settings", settings_file, "-q")
    assert code == 2, err
    assert "octaves" in err


def test_an_unknown_preset_with_settings_from_a_file_is_refused(capsys, photo, tmp_path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    dream_ok(capsys, photo, "-o", first, "--seed", "3", *FAST, "-q")
    code, _, err = run(capsys, "dream", photo, "-o", again, "--settings", first, "--preset", "nosuchpreset", "-q")
    assert code == 2, f"exit {code}; stored preset {stored_settings(again)['preset'] if again.exists() else None!r}"
    assert "nosuchpreset" in err


# --- listing -----------------------------------------------------------------------------------------


def test_layers_lists_every_lite0_layer_with_its_channels(capsys) -> None:
    code, out, _ = run(capsys, "layers")
    assert code == 0
    assert "lite0" in out.splitlines()[0]
    rows = {match[1]: int(match[2]) for match in re.finditer(r"^\s+(\S+)\s+(\d+) ch", out, re.MULTILINE)}
    expected_names = ["stem", *(f"block{i}" for i in range(16)), "head", "logits"]
    assert list(rows) == expected_names
    assert (rows["block0"], rows["block3"], rows["block15"], rows["head"], rows["logits"]) == (16, 40, 320, 1280, 1000)


def test_layers_of_googlenet_lists_inception_4c_without_its_weights(capsys, cache) -> None:
    code, out, _ = run(capsys, "layers", "googlenet")
    assert code == 0
    assert re.search(r"^\s+inception_4c\s+512 ch", out, re.MULTILINE), out
    assert not (cache / "weights").exists()  # listing layers must not need (or fetch) the weights


def test_layers_json_parses(capsys) -> None:
    code, out, _ = run(capsys, "layers", "--json")
    assert code == 0
    layers = json.loads(out)
    by_name = {layer["name"]: layer for layer in layers}
    assert [layer["name"] for layer in layers][-3:] == ["block15", "head", "logits"]
    assert by_name["block3"]["channels"] == 40
    assert by_name["block4"]["aliases"] == ["stage3"]
    assert set(by_name["head"]) >= {"name", "channels", "stride", "description", "aliases"}


def test_layers_of_an_unknown_network_exits_2(capsys) -> None:
    code, out, err = run(capsys, "layers", "nosuchnet")
    assert code == 2
    assert_one_line_error(err)
    assert "'nosuchnet'" in err
    assert out == ""


def test_models_marks_packaged_networks_available_and_downloads_not(capsys) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0
    marks = {match[2]: match[1] for match in re.finditer(r"^  ([* ]) (\S+)", out, re.MULTILINE)}
    assert marks["lite0"] == "*"
    assert marks["googlenet"] == " "
    assert "dreamcore models import" in out


def test_presets_lists_every_preset(capsys) -> None:
    code, out, _ = run(capsys, "presets")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == list(PRESETS)
    assert "lite0 layer block3" in out  # subtle's layer


def test_settings_of_a_png_not_made_by_dreamcore_exits_2(capsys) -> None:
    code, out, err = run(capsys, "settings", DATA / "chelsea.png")
    assert code == 2
    assert_one_line_error(err)
    assert "chelsea.png" in err and "no dreamcore settings" in err
    assert out == ""


def test_classify_sees_a_cat(capsys) -> None:
    code, out, _ = run(capsys, "classify", DATA / "chelsea.png")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5  # --top defaults to 5
    percent, label = lines[0].split(maxsplit=1)
    assert label in CAT_LABELS, out
    assert percent.endswith("%") and float(percent[:-1]) > 20


def test_classify_with_more_top_classes_than_the_network_has_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, "classify", DATA / "chelsea.png", "--top", "1001")
    assert code in (0, 2), err
    assert "unexpected error" not in err


# --- atlas -------------------------------------------------------------------------------------------


def test_atlas_writes_one_sheet_with_every_layer(capsys, photo, tmp_path) -> None:
    sheet = tmp_path / "sheet.png"
    code, _, err = run(
        capsys, "atlas", photo, "-o", sheet, "--layers", "block2,block9", "--cell-size", "64", *FAST, "--seed", "4"
    )
    assert code == 0, err
    rgb = pixels(sheet)
    height, width = rgb.shape[:2]
    assert width > 2 * 64  # two cells side by side, with gaps
    assert height >= 43 + LABEL_HEIGHT  # one row: a 64x43 cell (the 96x64 photo scaled to 64) over its label
    first, second = (rgb[GAP : GAP + 43, x : x + 64] for x in (GAP, 2 * GAP + 64))
    assert np.abs(first - second).mean() > 1.0, "the two layers dreamed the same picture"
    metadata = read_metadata(sheet)
    assert metadata is not None
    assert metadata["atlas"] == ["block2", "block9"]
    assert metadata["settings"]["network"] == "lite0"
    assert "Wrote" in err and "2 layers" in err


def test_atlas_with_an_unknown_layer_exits_2(capsys, photo, tmp_path) -> None:
    sheet = tmp_path / "sheet.png"
    code, _, err = run(capsys, "atlas", photo, "-o", sheet, "--layers", "bogus", "--cell-size", "64", *FAST)
    assert code == 2
    assert_one_line_error(err)
    assert "'bogus'" in err
    assert not sheet.exists()


# --- the installed command ---------------------------------------------------------------------------


def test_the_installed_dreamcore_command_dreams_and_exits_with_the_error_code(photo, tmp_path, cache) -> None:
    script = Path(sys.executable).with_name("dreamcore")
    assert script.is_file(), f"no {script}: install the project (pip install -e .) to get the dreamcore command"
    env = {**os.environ, "DREAMCORE_CACHE": str(cache), "DREAMCORE_OFFLINE": "1", "DREAMCORE_DEVICE": "cpu"}
    out = tmp_path / "dreamed.png"
    done = subprocess.run(
        [script, "dream", photo, "-o", out, "--seed", "3", *FAST],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Wrote {out}" in done.stderr
    assert stored_settings(out)["seed"] == 3
    with Image.open(out) as image:
        assert image.size == (96, 64)
    failed = subprocess.run(
        [script, "layers", "nosuchnet"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr and "'nosuchnet'" in failed.stderr


def test_reproducing_a_guided_dream_asks_for_the_guide_again(capsys, photo, tmp_path) -> None:
    guided, again = tmp_path / "guided.png", tmp_path / "again.png"
    guide_file = DATA / "coffee.png"
    dream_ok(capsys, photo, "-o", guided, "--seed", "3", "--guide", guide_file, *FAST, "-q")
    assert stored_settings(guided)["guide_layer"] == "block9"
    code, _, err = run(capsys, "dream", photo, "-o", again, "--settings", guided, "-q")
    assert code == 2
    assert_one_line_error(err)
    assert "--guide" in err and "coffee.png" in err
    assert not again.exists()
    dream_ok(capsys, photo, "-o", again, "--settings", guided, "--guide", guide_file, "--precision", "fp32", "-q")
    assert Image.open(again).tobytes() == Image.open(guided).tobytes()


def test_settings_of_the_wrong_type_are_sentences() -> None:
    from dreamcore.errors import UsageError
    from dreamcore.settings import DreamSettings

    for values, words in [
        ({"octaves": "3"}, "octaves must be a whole number"),
        ({"seed": 1.5}, "seed"),
        ({"step": "big"}, "step must be a number"),
        ({"extra": 1}, "extra"),
        ({"octaves": True}, "octaves"),
    ]:
        with pytest.raises(UsageError, match=words):
            DreamSettings.from_dict(values)
    assert DreamSettings.from_dict({"step": 1}).step == 1  # an int is a fine float
