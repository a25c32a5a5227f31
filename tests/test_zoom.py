"""The endless zoom and the animation writers, on a 64x48 photo with one step per frame.

Dreams run on the CPU in fp32 with fixed seeds, where they are exactly repeatable. MP4 tests need the
imageio-ffmpeg package (its bundled ffmpeg) and are skipped without it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from dreamcore import Cancelled, DreamError, DreamSettings, UsageError
from dreamcore.animation import encode_animation, parse_size, read_animation_metadata, save_animation
from dreamcore.cli import main
from dreamcore.images import read_metadata, to_image, to_tensor
from dreamcore.zoom import ZoomResult, ZoomSettings, settings_from_metadata, zoom, zoom_in

DATA = Path(__file__).parent / "data"
# One step per frame keeps a frame well under a second; fp32 on the CPU makes a seed repeat exactly.
FAST = DreamSettings(octaves=1, iterations=1, precision="fp32", device="cpu", seed=7)
SETTINGS = ZoomSettings(frames=4, zoom=1.2, fps=12, size=64, frame_octaves=1, frame_iterations=1, dream=FAST)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch) -> None:
    """An empty weights cache, no downloads, CPU only (the packaged lite0 needs neither)."""
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DREAMCORE_OFFLINE", "1")
    monkeypatch.setenv("DREAMCORE_DEVICE", "cpu")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(DATA / "chelsea.png") as image:
        return image.convert("RGB").resize((64, 48), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo_file(photo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "chelsea-64x48.png"
    photo.save(path)
    return path


@pytest.fixture(scope="module")
def result(photo) -> ZoomResult:
    return zoom(photo, SETTINGS)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def centre(array: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The middle ``fraction`` of a picture, where zooming in keeps content from inside the frame."""
    height, width = array.shape[:2]
    dy, dx = round(height * (1 - fraction) / 2), round(width * (1 - fraction) / 2)
    return array[dy : height - dy, dx : width - dx]


def magnified(image: Image.Image, factor: float) -> np.ndarray:
    return pixels(to_image(zoom_in(to_tensor(image), factor)))


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(centre(a) - centre(b)).mean())


def textured_frames(count: int = 6, size: tuple[int, int] = (160, 120)) -> list[Image.Image]:
    """Frames that compress about as badly as dreams: the photo zoomed in step by step, with fine noise."""
    rng = np.random.default_rng(0)
    with Image.open(DATA / "chelsea.png") as image:
        base = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    frames = []
    for index in range(count):
        frame = magnified(base, 1.0 + 0.05 * index) + rng.normal(0, 12, (size[1], size[0], 3))
        frames.append(Image.fromarray(frame.clip(0, 255).astype(np.uint8)))
    return frames


def gif_frames(path: Path) -> list[bytes]:
    with Image.open(path) as image:
        return [frame.convert("RGB").tobytes() for frame in ImageSequence.Iterator(image)]


def needs_ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def mp4_frames(data: bytes, tmp_path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) and frame count of an MP4, decoded by ffmpeg."""
    import imageio_ffmpeg

    path = tmp_path / "decoded.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    return tuple(meta["size"]), sum(1 for _ in reader)


# --- zooming -------------------------------------------------------------------------------------------


def test_a_zoom_has_the_frames_asked_for_all_of_one_size_and_each_one_new(result: ZoomResult) -> None:
    assert len(result.frames) == 4
    assert {frame.size for frame in result.frames} == {(64, 48)}
    assert all(frame.mode == "RGB" for frame in result.frames)
    for before, after in zip(result.frames, result.frames[1:], strict=False):
        assert difference(pixels(before), pixels(after)) > 1.0


def test_each_frame_is_the_last_one_magnified_then_dreamed(result: ZoomResult) -> None:
    for before, after in zip(result.frames, result.frames[1:], strict=False):
        as_zoomed = difference(pixels(after), magnified(before, SETTINGS.zoom))
        as_is = difference(pixels(after), pixels(before))
        assert as_zoomed < 0.6 * as_is, (as_zoomed, as_is)


def test_without_dreaming_to_speak_of_the_centre_is_magnified_by_the_zoom_factor(photo) -> None:
    barely = SETTINGS.replace(frames=2, zoom=1.5, dream=FAST.replace(step=1e-6, jitter=0))
    first, second = zoom(photo, barely).frames
    assert difference(pixels(first), pixels(photo)) < 1.0  # the dream did next to nothing
    # Cropping the middle two thirds and scaling it back up is what 1.5x zoom means.
    width, height = first.size
    crop = first.crop((width / 6, height / 6, width * 5 / 6, height * 5 / 6))
    expected = pixels(crop.resize(first.size, Image.Resampling.BILINEAR))
    assert difference(pixels(second), expected) < 4.0
    assert difference(pixels(second), pixels(first)) > 3 * difference(pixels(second), expected)


def test_zoom_in_scales_about_the_centre_and_turns_without_distorting() -> None:
    bar = torch.zeros(1, 3, 48, 64)
    bar[..., 22:26, 22:42] = 1.0  # 20 wide, 4 high, centred

    def extent(image: torch.Tensor) -> tuple[int, int, float, float]:
        ys, xs = torch.nonzero(image[0, 0] > 0.5, as_tuple=True)
        return (
            int(ys.max() - ys.min() + 1),
            int(xs.max() - xs.min() + 1),
            float(ys.float().mean()),
            float(xs.float().mean()),
        )

    assert zoom_in(bar, 1.0, 0.0) is bar
    height, width, y, x = extent(zoom_in(bar, 1.5))
    assert (height, width) == (6, 30) and (y, x) == (23.5, 31.5)
    height, width, y, x = extent(zoom_in(bar, 1.0, 90.0))  # a non-square frame: pixels must stay square
    assert (height, width) == (20, 4) and abs(y - 23.5) <= 1 and abs(x - 31.5) <= 1
    dot = torch.zeros(1, 3, 48, 64)
    dot[..., 22:26, 50:56] = 1.0  # right of the centre
    assert extent(zoom_in(dot, 1.0, 90.0))[2] < 10  # counter-clockwise: it ends up near the top


def test_the_same_seed_makes_the_same_animation_and_the_settings_say_how(photo, result: ZoomResult) -> None:
    again = zoom(photo, ZoomSettings.from_dict(result.settings.to_dict()))
    assert [frame.tobytes() for frame in again.frames] == [frame.tobytes() for frame in result.frames]
    other = zoom(photo, SETTINGS.replace(frames=2, dream=FAST.replace(seed=8)))
    assert other.frames[1].tobytes() != result.frames[1].tobytes()
    resolved = result.settings.dream
    assert (resolved.network, resolved.objective, resolved.seed) == ("lite0", "block9", 7)
    unseeded = zoom(photo, SETTINGS.replace(frames=1, dream=FAST.replace(seed=None)))
    assert isinstance(unseeded.settings.dream.seed, int)  # picked, and recorded


def test_later_frames_dream_lighter_with_seeds_derived_from_the_first() -> None:
    settings = ZoomSettings(dream=DreamSettings.from_preset("default", seed=100))
    first, later = settings.frame_dream(0), settings.frame_dream(5)
    assert (first.octaves, first.iterations, first.seed) == (4, 10, 100)
    assert (later.octaves, later.iterations, later.seed) == (3, 5, 105)
    assert settings.frame_steps(0) == 40 and settings.frame_steps(1) == 15
    gentle = settings.replace(dream=settings.dream.replace(octaves=1, iterations=1))
    assert gentle.frame_steps(3) == 1  # later frames never dream harder than the first


def test_large_photos_are_scaled_to_the_frame_size(photo) -> None:
    big = photo.resize((256, 192))
    frames = zoom(big, SETTINGS.replace(frames=1)).frames
    assert frames[0].size == (64, 48)


def test_progress_reports_every_step_of_every_frame_then_the_frame(photo) -> None:
    calls: list[tuple[int, int, int | None]] = []
    zoom(photo, SETTINGS.replace(frames=2), on_frame=lambda i, n, step: calls.append((i, n, step and step.iteration)))
    assert calls == [(0, 2, 1), (0, 2, None), (1, 2, 1), (1, 2, None)]


def test_cancelling_stops_between_frames_and_within_one(photo) -> None:
    finished: list[int] = []

    def record(index: int, _frames: int, step) -> None:
        if step is None:
            finished.append(index)

    with pytest.raises(Cancelled):
        zoom(photo, SETTINGS.replace(frames=10), on_frame=record, should_stop=lambda: len(finished) >= 2)
    assert finished == [0, 1]
    checks = iter(range(100))
    with pytest.raises(Cancelled):  # the first check passes, the second comes from inside the first dream
        zoom(photo, SETTINGS.replace(frames=10), should_stop=lambda: next(checks) >= 1)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"frames": 0}, "frames must be between 1 and 600 (got 0)"),
        ({"frames": -3}, "frames must be between 1 and 600 (got -3)"),
        ({"frames": 100000}, "frames must be between 1 and 600 (got 100000)"),
        ({"zoom": 0.5}, "zoom must be between 1 and 1.5"),
        ({"zoom": float("nan")}, "zoom must be between 1 and 1.5"),
        ({"fps": 0}, "fps must be between 1 and 60"),
        ({"rotate": 90}, "rotate must be between -45 and 45"),
        ({"size": 8}, "size must be between 16 and 2048"),
        ({"frames": "12"}, "frames must be a whole number"),
        ({"frames": True}, "frames must be a whole number"),
    ],
)
def test_absurd_zoom_settings_are_refused_in_a_sentence(change: dict, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        SETTINGS.replace(**change)
    message = str(caught.value)
    assert words in message and message.endswith(".")


def test_zoom_settings_survive_json_and_refuse_unknown_keys(result: ZoomResult) -> None:
    text = result.settings.to_json()
    assert ZoomSettings.from_dict(json.loads(text)) == result.settings
    assert settings_from_metadata(json.loads(json.dumps(result.metadata()))) == result.settings
    with pytest.raises(UsageError, match="Unknown zoom setting"):
        ZoomSettings.from_dict({"frames": 3, "speed": 2})
    with pytest.raises(UsageError, match="dream"):
        ZoomSettings.from_dict({"frames": 3, "dream": "deep"})


# --- animation files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_gif_and_webp_loop_every_frame_with_the_settings_inside(result: ZoomResult, tmp_path, suffix: str) -> None:
    path = save_animation(result.frames, tmp_path / f"zoom.{suffix}", 12, metadata=result.metadata())
    with Image.open(path) as image:
        assert image.format == suffix.upper()
        assert image.n_frames == 4 and image.size == (64, 48)
        assert image.info.get("loop") == 0
        durations = []
        for frame in ImageSequence.Iterator(image):
            frame.load()  # WebP reports a frame's duration once it is decoded
            durations.append(frame.info["duration"])
    assert abs(sum(durations) - 4 * 1000 / 12) <= 10  # 12 fps, even in GIF's 10 ms ticks
    assert read_animation_metadata(path) == result.metadata()
    assert read_metadata(path)["zoom"]["frames"] == 4  # what `dreamcore settings` reads


def test_gif_colours_stay_close_to_the_frames(result: ZoomResult) -> None:
    data = encode_animation(result.frames, "gif", 12)
    with Image.open(io.BytesIO(data)) as image:
        decoded = [pixels(frame) for frame in ImageSequence.Iterator(image)]
    for original, frame in zip(result.frames, decoded, strict=True):
        assert np.abs(pixels(original) - frame).mean() < 12  # dithered 256 colours, not a posterised mess


def test_mp4_is_h264_of_even_size_with_every_frame_and_the_settings(result: ZoomResult, tmp_path) -> None:
    needs_ffmpeg()
    path = save_animation(result.frames, tmp_path / "zoom.mp4", 12, metadata=result.metadata())
    data = path.read_bytes()
    assert mp4_frames(data, tmp_path) == ((64, 48), 4)
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # faststart: playable while downloading
    assert read_animation_metadata(path) == result.metadata()
    odd = [frame.crop((0, 0, 63, 47)) for frame in result.frames]  # x264 wants even sides
    assert mp4_frames(encode_animation(odd, "mp4", 12), tmp_path) == ((62, 46), 4)


@pytest.mark.parametrize("format", ["gif", "webp", "mp4"])
def test_a_size_budget_shrinks_the_file_until_it_fits(tmp_path, format: str) -> None:
    if format == "mp4":
        needs_ffmpeg()
    frames = textured_frames()
    full = encode_animation(frames, format, 12)
    budget = len(full) // 3
    fitted = encode_animation(frames, format, 12, max_bytes=budget)
    assert len(fitted) <= budget
    if format == "mp4":
        size, count = mp4_frames(fitted, tmp_path)
    else:
        with Image.open(io.BytesIO(fitted)) as image:
            size, count = image.size, image.n_frames
    assert count >= 3 and min(size) >= 16
    assert encode_animation(frames, format, 12, max_bytes=len(full)) == full  # already within: untouched


@pytest.mark.parametrize("format", ["gif", "webp", "mp4"])
def test_an_impossible_budget_is_explained(format: str) -> None:
    if format == "mp4":
        needs_ffmpeg()
    with pytest.raises(DreamError) as caught:
        encode_animation(textured_frames(3), format, 12, max_bytes=100)
    message = str(caught.value)
    assert message.startswith("The animation does not fit in 100 bytes") and message.endswith(".")
    assert "Allow a larger file" in message


def test_unknown_suffixes_and_bad_sizes_are_refused_in_a_sentence(result: ZoomResult, tmp_path) -> None:
    with pytest.raises(UsageError, match=r"\.gif, \.webp or \.mp4"):
        save_animation(result.frames, tmp_path / "zoom.xyz", 12)
    with pytest.raises(UsageError, match="at least one frame"):
        encode_animation([], "gif", 12)
    with pytest.raises(UsageError, match="same size"):
        encode_animation([result.frames[0], result.frames[1].resize((32, 24))], "gif", 12)
    assert (parse_size("10MiB"), parse_size("5MB"), parse_size("800k"), parse_size("1234")) == (
        10 * 1024**2,
        5_000_000,
        800_000,
        1234,
    )
    with pytest.raises(UsageError, match="10MiB"):
        parse_size("ten megs")


# --- the command ---------------------------------------------------------------------------------------

CLI_FAST = ("--octaves", "1", "--iterations", "1", "--frame-octaves", "1", "--frame-iterations", "1")
CLI_FAST += ("--precision", "fp32", "--size", "64", "-q")


def test_the_zoom_command_writes_a_gif_with_its_settings(capsys, photo_file, tmp_path) -> None:
    out = tmp_path / "zoom.gif"
    code = main(["zoom", str(photo_file), "--frames", "3", "--zoom", "1.1", "--seed", "4", "-o", str(out), *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    with Image.open(out) as image:
        assert image.n_frames == 3 and image.size == (64, 48)
    stored = read_animation_metadata(out)
    assert stored["zoom"]["frames"] == 3 and stored["zoom"]["zoom"] == 1.1
    assert stored["settings"]["seed"] == 4 and stored["settings"]["objective"] == "block9"
    again = tmp_path / "again.gif"
    assert main(["zoom", str(photo_file), "--settings", str(out), "-o", str(again), "-q"]) == 0
    # The animation's own settings reproduce it.
    assert gif_frames(again) == gif_frames(out)
    assert {**read_animation_metadata(again), "seconds": 0} == {**stored, "seconds": 0}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--frames", "3", "-o", "zoom.xyz"], "Cannot save animations as '.xyz'"),
        (["--frames", "0", "-o", "zoom.gif"], "frames must be between 1 and 600"),
        (["--frames", "3", "--zoom", "0.5", "-o", "zoom.gif"], "zoom must be between 1 and 1.5"),
        (["--frames", "3", "--fps", "0", "-o", "zoom.gif"], "fps must be between 1 and 60"),
        (["--frames", "3", "--max-bytes", "lots", "-o", "zoom.gif"], "Cannot read 'lots' as a size"),
        (["-o", "zoom.gif"], "--frames N"),
    ],
)
def test_bad_zoom_options_fail_before_any_dreaming(capsys, monkeypatch, tmp_path, options, words) -> None:
    import dreamcore.zoom

    def no_dreaming(*_args, **_kwargs):
        raise AssertionError("dreamed before checking the options")

    monkeypatch.setattr(dreamcore.zoom, "zoom", no_dreaming)
    monkeypatch.chdir(tmp_path)
    code = main(["zoom", str(tmp_path / "missing.png"), *options, "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dreamcore: ") and words in err and err.count("\n") == 1


def test_an_impossible_byte_limit_is_one_sentence(capsys, photo_file, tmp_path) -> None:
    out = tmp_path / "zoom.gif"
    code = main(["zoom", str(photo_file), "--frames", "2", "--max-bytes", "100", "-o", str(out), *CLI_FAST])
    err = capsys.readouterr().err
    assert code == 1 and "does not fit in 100 bytes" in err and err.count("\n") == 1
    assert not out.exists()
