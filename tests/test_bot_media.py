"""The one ingest path and the one output path for every platform."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.media import MediaError, MediaLimits, encode_to_fit, fit_result, ingest, sniff_format
from bot.store import FileStore, media_type

DATA = Path(__file__).parent / "data"


def png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_formats_are_recognised_from_their_bytes_not_their_names() -> None:
    photo = Image.new("RGB", (8, 8), "red")
    assert sniff_format(png(photo)) == "PNG" and sniff_format(encoded(photo, "JPEG")) == "JPEG"
    assert sniff_format(encoded(photo, "WEBP")) == "WEBP" and sniff_format(encoded(photo, "GIF")) == "GIF"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None  # a RIFF that is not WebP
    assert sniff_format(b"hello, I am a text file") is None


@pytest.mark.parametrize(
    ("data", "limits", "says"),
    [
        (b"", MediaLimits(), "The file is empty"),
        (b"just some text, named photo.png", MediaLimits(), "not an image I can read; send a photo as PNG, JPEG"),
        (b"x" * 3000, MediaLimits(max_bytes=2048), "That file is 2.9 KB; the limit is 2 KB."),
        (encoded(Image.new("RGB", (8, 8)), "BMP"), MediaLimits(), "not an image I can read"),
        (encoded(Image.new("RGB", (8, 8)), "TIFF"), MediaLimits(), "not an image I can read"),
        (png(Image.new("RGB", (8, 8)))[:40], MediaLimits(), "damaged or incomplete"),
        (png(Image.new("L", (12000, 10000))), MediaLimits(max_pixels=50_000_000), "120 megapixels"),
        (
            png(Image.new("RGB", (8, 8))),
            MediaLimits(formats=("JPEG",)),
            "That file is a PNG image; send a photo as JPEG",
        ),
    ],
)
def test_bad_files_are_refused_with_a_sentence(data: bytes, limits: MediaLimits, says: str) -> None:
    with pytest.raises(MediaError) as error:
        ingest(data, limits)
    assert says in str(error.value)
    assert "uploaded data" not in str(error.value)


def test_photos_are_upright_first_frame_rgb_and_at_most_the_working_size() -> None:
    limits = MediaLimits(working_side=64)
    cat = Image.open(DATA / "chelsea.png").convert("RGB")
    loaded = ingest((DATA / "chelsea.png").read_bytes(), limits)
    assert max(loaded.size) == 64 and loaded.rgb.mode == "RGB" and loaded.original_size == cat.size

    wide = Image.new("RGB", (80, 40), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the camera was held upright
    rotated = ingest(encoded(wide, "JPEG", exif=exif.tobytes()), limits)
    assert rotated.size == (32, 64)

    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "green")]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = ingest(gif, limits)
    assert first.rgb.getpixel((5, 5))[0] > 200 and first.rgb.getpixel((5, 5))[1] < 50

    cmyk = ingest(encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), limits)
    assert cmyk.rgb.mode == "RGB" and cmyk.rgb.getpixel((8, 8))[0] > 200
    sixteen = ingest(png(Image.new("I;16", (16, 16), 40000)), limits)
    assert sixteen.rgb.mode == "RGB"
    transparent = ingest(png(Image.new("RGBA", (16, 16), (255, 0, 0, 0))), limits)
    assert transparent.alpha is not None


def test_results_are_fitted_to_a_destinations_limit_without_the_users_metadata() -> None:
    noise = Image.effect_noise((600, 400), 80).convert("RGB")
    as_png = encode_to_fit(noise, 10 * 2**20, metadata={"settings": {"seed": 1}})
    assert as_png.startswith(b"\x89PNG")
    small = encode_to_fit(noise, 60_000)
    assert len(small) <= 60_000 and small.startswith(b"\xff\xd8")
    assert "exif" not in Image.open(io.BytesIO(small)).info
    with pytest.raises(MediaError):
        encode_to_fit(noise, 200)


def test_the_file_store_keeps_content_once_under_its_hash(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files")
    key = store.put(b"picture bytes", "png")
    assert store.put(b"picture bytes", "png") == key and store.get(key) == b"picture bytes"
    assert store.all_keys() == [key] and media_type(key) == "image/png"
    for bad in ("../../etc/passwd", "x.png", key.replace(".png", ".exe"), key[:-4] + "/../x.png"):
        assert not store.exists(bad)
        with pytest.raises(KeyError):
            store.path(bad)
    store.delete(key)
    assert not store.exists(key) and store.all_keys() == []


def test_stored_results_are_refitted_for_smaller_destinations() -> None:
    from dreamcore.animation import encode_animation

    still = encode_to_fit(Image.effect_noise((400, 300), 80).convert("RGB"), 10 * 2**20)
    assert fit_result(still, "png", len(still)) == (still, "png")  # fits: untouched
    smaller, extension = fit_result(still, "png", len(still) // 4)
    assert extension == "jpg" and len(smaller) <= len(still) // 4

    frames = [Image.effect_noise((200, 200), 60 + i).convert("RGB") for i in range(6)]
    gif = encode_animation(frames, "gif", 12, metadata={"settings": {"seed": 5}})
    fitted, extension = fit_result(gif, "gif", len(gif) // 3)
    assert extension == "gif" and len(fitted) <= len(gif) // 3
    with Image.open(io.BytesIO(fitted)) as animation:
        assert animation.n_frames >= 3 and b'"seed":5' in animation.info.get("comment", b"")
