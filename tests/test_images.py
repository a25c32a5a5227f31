"""dreamcore.images: reading every kind of input, refusing bad ones in words, writing clean outputs."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from dreamcore.errors import ImageError, UsageError
from dreamcore.images import (
    LoadedImage,
    encode_image,
    finish_image,
    load_image,
    read_metadata,
    resize_to,
    save_image,
    to_image,
    to_tensor,
)

DATA = Path(__file__).parent / "data"


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR says width x height: the header of a decompression bomb."""
    data = bytearray(png_bytes(Image.new("1", (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ----------------------------------------------------------------------------------------- samples


@pytest.mark.parametrize(
    ("name", "size"), [("chelsea.png", (451, 300)), ("coffee.png", (600, 400)), ("rocket.jpg", (640, 427))]
)
def test_sample_photos_load_as_rgb(name: str, size: tuple[int, int]) -> None:
    loaded = load_image(DATA / name)
    assert isinstance(loaded, LoadedImage)
    assert loaded.rgb.mode == "RGB"
    assert loaded.rgb.size == size == loaded.original_size
    assert loaded.alpha is None
    assert loaded.frames == 1
    assert loaded.format in ("PNG", "JPEG")


def test_sources_path_str_bytes_and_streams_agree() -> None:
    path = DATA / "coffee.png"
    data = path.read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer) -> int:  # type: ignore[override]
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    reference = np.asarray(load_image(path).rgb)
    for source in (str(path), data, io.BytesIO(data), Unseekable(data)):
        assert np.array_equal(np.asarray(load_image(source).rgb), reference)


# ----------------------------------------------------------------------------------------- modes


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # camera held rotated: display turned 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)

    loaded = load_image(path)
    assert loaded.rgb.size == (20, 40)
    assert loaded.original_size == (20, 40)
    top = loaded.rgb.getpixel((10, 5))
    bottom = loaded.rgb.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_orientation_with_max_side(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 8
    path = tmp_path / "rotated.png"
    Image.new("RGB", (200, 100), "green").save(path, exif=exif.tobytes())
    loaded = load_image(path, max_side=50)
    assert loaded.original_size == (100, 200)
    assert loaded.rgb.size == (25, 50)


def test_rgba_png_keeps_alpha_through_finish_and_save(tmp_path: Path) -> None:
    alpha = Image.linear_gradient("L").resize((64, 48))
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    image.putalpha(alpha)
    path = tmp_path / "in.png"
    image.save(path)

    loaded = load_image(path)
    assert loaded.rgb.mode == "RGB"
    assert loaded.alpha is not None and loaded.alpha.mode == "L"
    assert np.array_equal(np.asarray(loaded.alpha), np.asarray(alpha))

    result = finish_image(loaded.rgb, loaded)
    assert result.mode == "RGBA"
    out = save_image(result, tmp_path / "out.png")
    with Image.open(out) as reread:
        assert reread.mode == "RGBA"
        assert np.array_equal(np.asarray(reread.getchannel("A")), np.asarray(alpha))

    # A result of another size (upscaled dream) gets the alpha resized to match.
    bigger = finish_image(loaded.rgb.resize((128, 96)), loaded)
    assert bigger.size == (128, 96) and bigger.mode == "RGBA"


def test_opaque_alpha_is_dropped_and_finish_returns_rgb() -> None:
    loaded = load_image(png_bytes(Image.new("RGBA", (8, 8), (1, 2, 3, 255))))
    assert loaded.alpha is None
    assert finish_image(loaded.rgb, loaded).mode == "RGB"


def test_palette_gif_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(0, (0, 0, 8, 16))  # left half uses the transparent index
    path = tmp_path / "clear.gif"
    image.save(path, transparency=0)

    loaded = load_image(path)
    assert loaded.rgb.mode == "RGB"
    assert loaded.alpha is not None
    assert loaded.alpha.getpixel((2, 2)) == 0
    assert loaded.alpha.getpixel((12, 2)) == 255
    assert loaded.rgb.getpixel((12, 2)) == (255, 0, 0)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (12, 10), colour) for colour in colours]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)

    loaded = load_image(path)
    assert loaded.frames == 3
    assert loaded.rgb.size == (12, 10)
    assert loaded.rgb.getpixel((5, 5)) == (255, 0, 0)


def test_animated_png_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGBA", (12, 10), colour) for colour in [(0, 250, 0, 255), (0, 0, 250, 255), (9, 9, 9, 255)]]
    path = tmp_path / "animated.png"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    loaded = load_image(path)
    assert loaded.frames == 3
    assert loaded.rgb.getpixel((5, 5)) == (0, 250, 0)
    assert loaded.alpha is None


def test_animated_webp_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (12, 10), colour) for colour in [(250, 0, 0), (0, 0, 250)]]
    path = tmp_path / "animated.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    loaded = load_image(path)
    assert loaded.frames == 2
    assert loaded.rgb.getpixel((5, 5)) == (250, 0, 0)


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gradient = np.linspace(0, 65535, 1024).round().astype(np.uint16).reshape(4, 256)
    path = tmp_path / "deep.png"
    Image.fromarray(gradient).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")

    loaded = load_image(path)
    values = np.asarray(loaded.rgb)[..., 0].ravel()
    assert values[0] == 0 and values[-1] == 255
    assert np.all(np.diff(values.astype(int)) >= 0)
    assert abs(int(values[len(values) // 2]) - 128) <= 1  # the middle is mid-grey, not white
    assert (values == 255).sum() <= 4  # only the very top of the range is white


def test_32_bit_and_float_grayscale() -> None:
    loaded = load_image(encode_tiff(Image.fromarray(np.array([[0, 1000, 70000, 140000]], dtype=np.int32))))
    assert np.asarray(loaded.rgb)[0, :, 0].tolist() == [0, 2, 128, 255]

    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32))
    assert np.asarray(load_image(encode_tiff(unit)).rgb)[0, :, 0].tolist() == [0, 128, 255, 0]


def encode_tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    return buffer.getvalue()


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cyan.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)
    loaded = load_image(path)
    assert loaded.rgb.mode == "RGB"
    red, green, blue = loaded.rgb.getpixel((8, 8))
    assert red < 40 and green > 200 and blue > 200


def test_cmyk_with_broken_profile_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "broken-profile.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, icc_profile=b"not a profile at all")
    red, green, blue = load_image(path).rgb.getpixel((8, 8))
    assert red > 200 and green < 40 and blue < 40


@pytest.mark.parametrize("mode", ["L", "1", "LA", "P", "I;16B"])
def test_other_modes_become_rgb(mode: str) -> None:
    if mode == "I;16B":
        image = Image.frombytes("I;16B", (2, 1), bytes([0, 0, 255, 255]))
        buffer = io.BytesIO()
        image.save(buffer, "TIFF")
        loaded = load_image(buffer.getvalue())
        assert np.asarray(loaded.rgb)[0, :, 0].tolist() == [0, 255]
        return
    image = Image.new("RGBA", (8, 8), (200, 100, 50, 128)).convert(mode)
    loaded = load_image(png_bytes(image))
    assert loaded.rgb.mode == "RGB" and loaded.rgb.size == (8, 8)
    assert (loaded.alpha is not None) == (mode in ("LA", "P"))  # RGBA -> P keeps alpha in the palette


def test_max_side_downscales_rgb_and_alpha() -> None:
    image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (0, 0, 300, 400))
    loaded = load_image(png_bytes(image), max_side=300)
    assert loaded.rgb.size == (300, 200)
    assert loaded.alpha is not None and loaded.alpha.size == (300, 200)
    assert loaded.original_size == (600, 400)

    jpeg = load_image(DATA / "rocket.jpg", max_side=100)  # decoded at reduced scale, then resampled
    assert jpeg.rgb.size == (100, 67) and jpeg.original_size == (640, 427)

    small = load_image(DATA / "coffee.png", max_side=4000)
    assert small.rgb.size == (600, 400)

    with pytest.raises(UsageError):
        load_image(DATA / "coffee.png", max_side=0)


# ----------------------------------------------------------------------------------------- refusals


def test_random_bytes_are_refused() -> None:
    with pytest.raises(ImageError, match="uploaded data is not an image") as info:
        load_image(np.random.default_rng(0).bytes(4096))
    assert "PNG" in str(info.value) and "JPEG" in str(info.value)


def test_truncated_png_is_refused_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes((DATA / "coffee.png").read_bytes()[:20_000])
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert "cut.png" in message and "damaged or incomplete" in message and "PNG" in message


def test_corrupt_png_data_is_refused(tmp_path: Path) -> None:
    data = bytearray(png_bytes(Image.new("RGB", (32, 32), "red")))
    start = data.index(b"IDAT") + 4
    data[start : start + 20] = b"\xff" * 20
    with pytest.raises(ImageError, match="damaged"):
        load_image(bytes(data))


def test_empty_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(io.BytesIO())
    path = tmp_path / "nothing.png"
    path.touch()
    with pytest.raises(ImageError, match=r"nothing\.png' is an empty file"):
        load_image(path)


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 10)
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert "notes.jpg" in message and "not an image" in message and "PNG" in message


def test_missing_path_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"Cannot find the image .*missing\.png.*Check the path"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"too large.*Scale it down"):
        load_image(png_claiming_size(30_000, 30_000))
    assert time.perf_counter() - started < 1.0


def test_our_pixel_limit_names_the_size() -> None:
    with pytest.raises(ImageError) as info:
        load_image(png_claiming_size(9_000, 9_000))
    message = str(info.value)
    assert "9000x9000" in message and "81 megapixels" in message and "the limit is 64 megapixels" in message

    # Between Pillow's warning and error limits: no Pillow warning escapes, our sentence names the size.
    with pytest.raises(ImageError, match="10000x10000 pixels"):
        load_image(png_claiming_size(10_000, 10_000))

    with pytest.raises(ImageError, match=r"600x400.*limit is 0\.1 megapixels"):
        load_image(DATA / "coffee.png", max_pixels=100_000)


# ----------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", ["png", "jpg", "jpeg", "webp"])
def test_metadata_round_trip(tmp_path: Path, suffix: str) -> None:
    metadata = {"network": "efficientnet_lite0", "layers": ["blocks.4"], "steps": 20, "note": "Schrödinger's cat"}
    image = load_image(DATA / "chelsea.png").rgb
    path = save_image(image, tmp_path / "deeper" / "folder" / f"dream.{suffix}", metadata)
    assert path.exists()
    assert read_metadata(path) == metadata
    assert read_metadata(path.read_bytes()) == metadata
    assert load_image(path).rgb.size == image.size
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial file left


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_encode_image_bytes(format: str) -> None:
    data = encode_image(Image.new("RGB", (8, 8), "red"), format, {"a": 1})
    assert read_metadata(data) == {"a": 1}
    assert load_image(data).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[format]


def test_read_metadata_absent_or_foreign(tmp_path: Path) -> None:
    assert read_metadata(DATA / "rocket.jpg") is None  # has a comment, but not ours
    assert read_metadata(DATA / "coffee.png") is None
    path = save_image(Image.new("RGB", (4, 4)), tmp_path / "plain.webp")
    assert read_metadata(path) is None
    with pytest.raises(ImageError, match="not an image"):
        read_metadata(b"hello")
    with pytest.raises(ImageError, match="Cannot find"):
        read_metadata(tmp_path / "gone.png")


def test_unknown_suffix_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.png, \.jpg, \.jpeg or \.webp"):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "out.bmp")
    with pytest.raises(UsageError, match="end the file name"):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "out")
    with pytest.raises(UsageError):
        encode_image(Image.new("RGB", (4, 4)), "gif")
    # An explicit format wins over the suffix.
    path = save_image(Image.new("RGB", (4, 4)), tmp_path / "out.bin", format="png")
    with Image.open(path) as reread:
        assert reread.format == "PNG"


def test_input_exif_and_gps_do_not_leak(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.Base.Model] = "Model X"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    source = tmp_path / "holiday.jpg"
    Image.new("RGB", (32, 32), "orange").save(source, exif=exif.tobytes(), comment=b"private")

    loaded = load_image(source)
    with Image.open(source) as raw:
        raw.load()
        for suffix in ("png", "jpg", "webp"):
            for image in (loaded.rgb, raw):  # also an image whose info still carries the EXIF
                out = save_image(image, tmp_path / f"out-{id(image)}.{suffix}", {"k": "v"})
                data = out.read_bytes()
                assert b"SecretCam" not in data and b"private" not in data
                with Image.open(out) as reread:
                    tags = reread.getexif()
                    assert ExifTags.Base.Make not in tags
                    assert ExifTags.IFD.GPSInfo not in tags
                assert read_metadata(out) == {"k": "v"}


def test_jpeg_flattens_alpha_onto_white_and_webp_keeps_it(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    jpeg = load_image(save_image(clear, tmp_path / "flat.jpg"))
    assert jpeg.alpha is None and min(jpeg.rgb.getpixel((8, 8))) > 250

    half = Image.new("RGBA", (16, 16), (255, 0, 0, 255))
    half.paste((0, 0, 0, 0), (0, 0, 8, 16))
    webp = load_image(save_image(half, tmp_path / "alpha.webp"))
    assert webp.alpha is not None
    assert webp.alpha.getpixel((2, 8)) < 10 and webp.alpha.getpixel((12, 8)) > 245


# ----------------------------------------------------------------------------------------- tensors


def test_to_tensor_to_image_round_trip_is_exact() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 37, 53) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert np.array_equal(np.asarray(to_image(tensor)), pixels)
    assert np.array_equal(np.asarray(to_image(tensor[0])), pixels)
    assert np.array_equal(np.asarray(to_image(tensor.to(torch.float64))), pixels)
    assert torch.equal(tensor, to_tensor(image))  # to_image left its input alone
    # bfloat16 cannot hold every level exactly, but lands within one step.
    rough = np.asarray(to_image(tensor.to(torch.bfloat16))).astype(int)
    assert np.abs(rough - pixels).max() <= 1


def test_to_image_clamps_and_checks_shape() -> None:
    tensor = torch.tensor([[-1.0, 0.5, 2.0, float("nan")]]).expand(3, 1, 4)
    assert np.asarray(to_image(tensor))[0, :, 0].tolist() == [0, 128, 255, 0]
    with pytest.raises(ValueError):
        to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        to_image(torch.zeros(1, 4, 4, 4))


def test_to_tensor_accepts_other_modes() -> None:
    assert to_tensor(Image.new("L", (5, 4), 255)).shape == (1, 3, 4, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tensor_helpers_on_cuda() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    tensor = to_tensor(Image.fromarray(pixels)).cuda()
    assert np.array_equal(np.asarray(to_image(tensor)), pixels)
    assert np.array_equal(np.asarray(to_image(tensor.half())), pixels)
    small = resize_to(tensor.half(), (8, 12))
    assert small.shape == (1, 3, 8, 12) and small.dtype == torch.float16 and small.is_cuda


def test_resize_to_shapes() -> None:
    tensor = torch.rand(2, 3, 40, 60)
    assert resize_to(tensor, (20, 30)).shape == (2, 3, 20, 30)
    assert resize_to(tensor, (80, 90)).shape == (2, 3, 80, 90)
    assert resize_to(tensor, (20, 90)).shape == (2, 3, 20, 90)
    assert resize_to(tensor, (40, 60)) is tensor
    assert resize_to(tensor[0], (10, 15)).shape == (3, 10, 15)
    assert resize_to(tensor.to(torch.bfloat16), (20, 30)).dtype == torch.bfloat16
    # Shrinking a constant picture keeps it constant (antialiasing weights sum to one).
    flat = torch.full((1, 3, 64, 64), 0.25)
    assert torch.allclose(resize_to(flat, (17, 23)), torch.full((1, 3, 17, 23), 0.25))
    with pytest.raises(ValueError):
        resize_to(tensor, (0, 10))
