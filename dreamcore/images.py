"""Reading and writing images: the engine's one path between files (or uploads) and tensors.

Everything that reads a picture goes through :func:`load_image`, which refuses oversized images before
decoding them, turns every colour mode Pillow can produce into 8-bit sRGB plus an optional alpha mask,
and explains unreadable input in a sentence. Everything that writes one goes through
:func:`encode_image` / :func:`save_image`, which keep the dream's settings as JSON inside the file and
drop every other piece of metadata, so a user's EXIF (camera, GPS) never leaks into a result.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageCms, PngImagePlugin, UnidentifiedImageError

from dreamcore.errors import DreamError, ImageError, UsageError

__all__ = [
    "METADATA_KEY",
    "LoadedImage",
    "encode_image",
    "finish_image",
    "load_image",
    "read_metadata",
    "resize_to",
    "save_image",
    "to_image",
    "to_tensor",
]

#: Key of the PNG iTXt chunk that holds the dream's settings.
METADATA_KEY = "dreamcore"

# Formats Pillow may try when reading. Restricting the list keeps exotic decoders (and EPS, which runs
# Ghostscript) away from uploaded files. MPO is how Pillow opens many camera JPEGs.
_READ_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "TGA", "PPM", "ICO")
_READABLE = "PNG, JPEG, WebP, GIF, BMP or TIFF"

# Output suffix -> Pillow format name.
_WRITE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_WRITABLE = ".png, .jpg, .jpeg or .webp"

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

# ImageOps.exif_transpose's table: EXIF orientation -> the transpose that makes the picture upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# read_metadata decodes a PNG's pixels (to reach late text chunks) only below this size.
_METADATA_MAX_PIXELS = 64_000_000

# EXIF UserComment starts with an 8-byte character-code field.
_USER_COMMENT_ASCII = b"ASCII\x00\x00\x00"

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True, eq=False)  # identity equality: comparing pixel data by accident would be slow
class LoadedImage:
    """A decoded picture: 8-bit RGB pixels plus the alpha mask the input had, if any."""

    rgb: Image.Image
    alpha: Image.Image | None
    original_size: tuple[int, int]
    format: str | None
    frames: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``rgb``; smaller than ``original_size`` when ``max_side`` scaled it down."""
        return self.rgb.size


# --------------------------------------------------------------------------------------------- reading


def load_image(source: Source, *, max_pixels: int = 64_000_000, max_side: int | None = None) -> LoadedImage:
    """Read a picture from a path, bytes or a binary file object.

    Animated files give their first frame, EXIF orientation is applied, every colour mode becomes 8-bit
    RGB (plus an "L" alpha mask when the input had transparency), and when ``max_side`` is given a larger
    picture is scaled down so its longer side is ``max_side``. Raises :class:`ImageError` for anything
    unreadable or larger than ``max_pixels`` (checked from the header, before any pixel is decoded).
    """
    if max_side is not None and max_side < 1:
        raise UsageError(f"The largest side must be at least 1 pixel, not {max_side}.")
    name = _describe(source)
    with _open(source, name, max_pixels) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(_too_large(name, width, height, max_pixels))
        file_format = image.format
        try:
            frames = int(getattr(image, "n_frames", 1))
            if frames > 1:
                image.seek(0)
            if max_side is not None and file_format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves max_side pixels.
                image.draft(image.mode, (max_side, max_side))
            image.load()
            orientation = _orientation(image)
            rgb, alpha = _to_rgb(image, name)
        except DreamError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageError(_too_large(name, width, height, max_pixels)) from error
        except MemoryError as error:
            raise ImageError(f"There is not enough memory to decode {name}; use a smaller image.") from error
        except Exception as error:  # Pillow's decoders raise many types; the user needs one sentence
            raise ImageError(_damaged(name, file_format)) from error

    transpose = _ORIENTATION.get(orientation)
    swaps = orientation in (5, 6, 7, 8)
    original_size = (height, width) if swaps else (width, height)

    if max_side is not None and max(rgb.size) > max_side:
        # Scale before rotating (cheaper), computing the target in upright coordinates.
        upright = _fit(original_size, max_side)
        target = (upright[1], upright[0]) if swaps else upright
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if alpha is not None:
            alpha = alpha.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if transpose is not None:
        rgb = rgb.transpose(transpose)
        if alpha is not None:
            alpha = alpha.transpose(transpose)
    rgb.info = {}
    if alpha is not None:
        alpha.info = {}
    return LoadedImage(rgb=rgb, alpha=alpha, original_size=original_size, format=file_format, frames=frames)


def from_pil(image: Image.Image, *, max_side: int | None = None) -> LoadedImage:
    """A picture already in memory (a Pillow image), normalised like :func:`load_image` does a file."""
    rgb, alpha = _to_rgb(image, "the image")
    original_size = rgb.size
    if max_side is not None and max(rgb.size) > max_side:
        target = _fit(original_size, max_side)
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        alpha = alpha.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0) if alpha is not None else None
    return LoadedImage(rgb=rgb, alpha=alpha, original_size=original_size, format=None, frames=1)


def read_metadata(source: Source) -> dict | None:
    """The settings :func:`save_image` stored in a PNG, JPEG or WebP file, or None when it has none."""
    name = _describe(source)
    with _open(source, name, None) as image:
        try:
            return first_json_object(_metadata_texts(image))
        except Exception as error:  # broken EXIF or text chunks: same sentence as any damaged file
            raise ImageError(_damaged(name, image.format)) from error


def first_json_object(texts: Iterable[str]) -> dict | None:
    """The first text that is a JSON object: ours, among comments other programs may have written."""
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _metadata_texts(image: Image.Image) -> list[str]:
    """Candidate JSON strings, in the places save_image writes them."""
    texts = []
    value = image.info.get(METADATA_KEY)
    if value is None and image.format == "PNG" and image.width * image.height <= _METADATA_MAX_PIXELS:
        # Text chunks after the pixel data are only read by load(); the size check keeps that cheap.
        image.load()
        value = getattr(image, "text", {}).get(METADATA_KEY)
    if isinstance(value, str):
        texts.append(value)
    comment = image.info.get("comment")
    if isinstance(comment, bytes):
        texts.append(comment.decode("utf-8", errors="replace"))
    elif isinstance(comment, str):
        texts.append(comment)
    if "exif" in image.info:
        user_comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
        if isinstance(user_comment, bytes):
            texts.append(user_comment[8:].decode("utf-8", errors="replace"))
        elif isinstance(user_comment, str):
            texts.append(user_comment)
    return texts


def _describe(source: Source) -> str:
    """How messages name the input."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    return "the uploaded data"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".rstrip("0").rstrip(".")


def _too_large(name: str, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{_sentence(name)} is {width}x{height} pixels ({_megapixels(width * height)} megapixels); the limit is "
        f"{_megapixels(max_pixels)} megapixels. Scale it down and try again."
    )


def _damaged(name: str, file_format: str | None) -> str:
    kind = f"a {file_format} image" if file_format else "an image"
    return (
        f"{_sentence(name)} looks like {kind} but it is damaged or incomplete, so it cannot be decoded. "
        f"Save or download it again, or use another {_READABLE} file."
    )


def _open(source: Source, name: str, max_pixels: int | None) -> Image.Image:
    """Image.open with every failure turned into a sentence; reads only the header."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{_sentence(name)} is a folder, not an image. Give the path of a {_READABLE} file.")
        try:
            if path.stat().st_size == 0:
                raise ImageError(f"{_sentence(name)} is an empty file, not an image. Use a {_READABLE} file.")
        except FileNotFoundError as error:
            raise ImageError(f"Cannot find the image {name}. Check the path and try again.") from error
        except OSError:
            pass  # let Image.open report it below
        fp: str | os.PathLike[str] | BinaryIO = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(f"{_sentence(name)} is empty, not an image. Send a {_READABLE} file.")
        fp = io.BytesIO(bytes(source))
    else:
        fp = source
        if not (hasattr(fp, "seekable") and fp.seekable()):
            fp = io.BytesIO(fp.read())  # Pillow needs to seek
    Image.init()
    formats = [f for f in _READ_FORMATS if f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; our max_pixels check (after this header read) decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own limit (above ours by default) fired inside Image.open; it reports only a pixel count.
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f" ({_megapixels(int(found.group(1)))} megapixels)" if found else ""
        limit = f"; the limit is {_megapixels(max_pixels)} megapixels" if max_pixels else ""
        raise ImageError(f"{_sentence(name)} is too large{pixels}{limit}. Scale it down and try again.") from error
    except UnidentifiedImageError as error:
        if isinstance(fp, io.IOBase) and fp.seekable() and fp.seek(0, io.SEEK_END) == 0:
            raise ImageError(f"{_sentence(name)} is empty, not an image. Send a {_READABLE} file.") from error
        raise ImageError(f"{_sentence(name)} is not an image dreamcore can read. Use a {_READABLE} file.") from error
    except FileNotFoundError as error:
        raise ImageError(f"Cannot find the image {name}. Check the path and try again.") from error
    except PermissionError as error:
        raise ImageError(f"Cannot read {name}: permission denied. Check the file's permissions.") from error
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ImageError(f"Cannot read {name} ({reason}). Check the file and try again.") from error
    except Exception as error:  # a header so broken that a plugin crashed while identifying it
        raise ImageError(_damaged(name, None)) from error


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when absent or unreadable: a broken tag must not lose the picture."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if int(value) in _ORIENTATION else 1
    except Exception:
        return 1


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(image: Image.Image, name: str) -> tuple[Image.Image, Image.Image | None]:
    """Any Pillow mode -> (8-bit RGB, "L" alpha or None)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _integer_to_gray(image).convert("RGB"), None
    if mode == "F":
        return _float_to_gray(image).convert("RGB"), None
    if mode == "CMYK":
        return _cmyk_to_rgb(image), None

    alpha = None
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None  # an alpha channel that hides nothing is not transparency
        rgb = rgba.convert("RGB")
    elif mode == "RGB":
        rgb = image.copy()
    else:
        try:
            rgb = image.convert("RGB")
        except ValueError as error:
            raise ImageError(
                f"{_sentence(name)} uses the {mode} colour mode, which dreamcore cannot convert. "
                "Save it as an ordinary RGB PNG or JPEG and try again."
            ) from error
    return _to_srgb(rgb, image.info.get("icc_profile")), alpha


def _integer_to_gray(image: Image.Image) -> Image.Image:
    """16- or 32-bit grayscale -> 8-bit, scaling the full range rather than clipping at 255."""
    data = np.asarray(image).astype(np.int64)
    if image.mode in _SIXTEEN_BIT_MODES or image.format in ("PNG", "PPM"):
        sixteen_bit = True
    else:
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if low >= 0 and high <= 255:
            return Image.fromarray(data.astype(np.uint8))
        sixteen_bit = low >= 0 and high <= 65535
    if sixteen_bit:
        return Image.fromarray(((np.clip(data, 0, 65535) + 128) // 257).astype(np.uint8))
    return Image.fromarray(_stretch(data.astype(np.float64)))


def _float_to_gray(image: Image.Image) -> Image.Image:
    """Float data: [0, 1] and [0, 255] are taken as they are, anything else is stretched to fit."""
    data = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if low >= 0 and high <= 1:
        data = data * 255
    elif not (low >= 0 and high <= 255):
        return Image.fromarray(_stretch(data))
    return Image.fromarray(np.rint(data).astype(np.uint8))


def _stretch(data: np.ndarray) -> np.ndarray:
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, np.uint8)
    return np.rint((data - low) * (255 / (high - low))).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK through its embedded ICC profile when there is one (print colours), else Pillow's formula."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile: the plain conversion below is still a usable picture
    return image.convert("RGB")


def _to_srgb(rgb: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert RGB pixels tagged with another profile (Adobe RGB, Display P3) to sRGB, which outputs assume."""
    if not icc:
        return rgb
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "RGB" or "srgb" in ImageCms.getProfileDescription(profile).lower():
            return rgb
        converted = ImageCms.profileToProfile(rgb, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        return converted if converted is not None else rgb
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, AttributeError):
        return rgb  # an unreadable profile: keep the numbers as they are


# --------------------------------------------------------------------------------------------- tensors


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float32 (1, 3, H, W) tensor in [0, 1] on the CPU."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    # Pillow's planar split + stack is the fastest way to channels-first (no strided float copy).
    planes = np.stack([np.asarray(channel) for channel in image.split()])
    return torch.from_numpy(planes).unsqueeze(0).to(torch.float32).div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] (any float dtype, any device) as an RGB image."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"to_image takes one picture, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"to_image wants a (1, 3, H, W) or (3, H, W) tensor, got shape {tuple(tensor.shape)}")
    # Quantise on the tensor's device so only uint8 crosses to the CPU; mul() copies, so the caller's
    # tensor is untouched by the in-place steps.
    pixels = tensor.detach().to(torch.float32).mul(255.0).clamp_(0.0, 255.0).round_().nan_to_num_(0.0)
    planes = pixels.to(torch.uint8).cpu().numpy()
    return Image.merge("RGB", [Image.fromarray(plane) for plane in planes])


def resize_to(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an (N, C, H, W) or (C, H, W) tensor to ``size`` = (height, width), as torch orders it.

    Bilinear, antialiased when shrinking so octave pyramids do not alias; the dtype is kept.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"resize_to needs a size of at least 1x1, got {size}")
    squeeze = tensor.dim() == 3
    batch = tensor.unsqueeze(0) if squeeze else tensor
    if batch.dim() != 4:
        raise ValueError(f"resize_to wants an (N, C, H, W) or (C, H, W) tensor, got shape {tuple(tensor.shape)}")
    if batch.shape[-2:] == (height, width):
        return tensor
    shrinking = height < batch.shape[-2] or width < batch.shape[-1]
    work = batch if batch.dtype in (torch.float32, torch.float64) else batch.to(torch.float32)
    try:
        out = F.interpolate(work, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    except (NotImplementedError, RuntimeError):
        if not shrinking:
            raise
        # Backends without antialiased bilinear (older MPS): area averaging is the antialiased fallback.
        out = F.interpolate(work, size=(height, width), mode="area")
    out = out.to(batch.dtype)
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------- writing


def finish_image(rgb: Image.Image, loaded: LoadedImage) -> Image.Image:
    """Put the input's alpha back on a result, so a transparent PNG stays transparent; RGB or RGBA."""
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    if loaded.alpha is None:
        return rgb
    alpha = loaded.alpha
    if alpha.size != rgb.size:
        alpha = alpha.resize(rgb.size, Image.Resampling.LANCZOS)
    return Image.merge("RGBA", (*rgb.split(), alpha))


def encode_image(image: Image.Image, format: str = "png", metadata: dict | None = None) -> bytes:
    """The picture as PNG, JPEG or WebP bytes, with ``metadata`` as JSON and no other metadata."""
    pil_format = _write_format(format)
    buffer = io.BytesIO()
    _write(image, buffer, pil_format, metadata)
    return buffer.getvalue()


def output_format(path: str | Path) -> str:
    """The format a file name asks for; a UsageError for names no supported format fits.

    Cheap, so callers can check an output path before hours of work rather than after.
    """
    path = Path(path)
    if not path.suffix:
        raise UsageError(f"Cannot tell which format to save '{path}' in; end the file name with {_WRITABLE}.")
    _write_format(path.suffix)
    return path.suffix


def save_image(
    image: Image.Image, path: str | Path, metadata: dict | None = None, *, format: str | None = None
) -> Path:
    """Write the picture to ``path`` (format from the suffix unless given), creating folders as needed.

    The file appears complete or not at all: it is written beside the target and then renamed.
    """
    path = Path(path)
    return write_atomically(path, encode_image(image, format or output_format(path), metadata))


def write_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` beside ``path`` and rename it into place, so the file appears complete or not at all."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "xb") as handle:
            handle.write(data)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise DreamError(f"Cannot write '{path}' ({reason}). Choose another output path.") from error
    return path


def _write_format(name: str) -> str:
    key = name.lower().lstrip(".")
    if key not in _WRITE_FORMATS:
        raise UsageError(f"Cannot save images as {name!r}; use a file name ending in {_WRITABLE}.")
    return _WRITE_FORMATS[key]


def _write(image: Image.Image, fp: BinaryIO, pil_format: str, metadata: dict | None) -> None:
    clean = _prepare(image, pil_format)
    options: dict = {}
    if pil_format == "PNG":
        options["compress_level"] = 6
        if metadata is not None:
            info = PngImagePlugin.PngInfo()
            info.add_itxt(METADATA_KEY, _dump(metadata, ascii_only=False))
            options["pnginfo"] = info
    elif pil_format == "JPEG":
        options.update(quality=95, subsampling=0)  # 4:4:4: dream detail lives in the colours too
        if metadata is not None:
            options["comment"] = _dump(metadata, ascii_only=False).encode("utf-8")
    else:
        options.update(quality=92, method=4)
        if metadata is not None:
            # Pillow reads WebP EXIF back; UserComment in the Exif IFD is the standard place for free text.
            exif = Image.Exif()
            user_comment = _USER_COMMENT_ASCII + _dump(metadata, ascii_only=True).encode("ascii")
            exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = user_comment
            options["exif"] = exif.tobytes()
    try:
        clean.save(fp, format=pil_format, **options)
    except (OSError, ValueError) as error:
        raise ImageError(f"Could not encode the picture as {pil_format} ({error}).") from error


def _prepare(image: Image.Image, pil_format: str) -> Image.Image:
    """A fresh RGB/RGBA copy with no info, so nothing from the input (EXIF, GPS, ICC, text) is written."""
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    if pil_format == "JPEG" and has_alpha:
        rgba = image.convert("RGBA")
        clean = Image.new("RGB", rgba.size, (255, 255, 255))
        clean.paste(rgba, mask=rgba.getchannel("A"))  # JPEG has no alpha: flatten onto white
    elif has_alpha:
        clean = image.copy() if image.mode == "RGBA" else image.convert("RGBA")
    else:
        clean = image.copy() if image.mode == "RGB" else image.convert("RGB")
    clean.info = {}
    return clean


def _dump(metadata: dict, *, ascii_only: bool) -> str:
    # default=str: a Path or other odd value in the settings must not stop the picture being saved.
    return json.dumps(metadata, ensure_ascii=ascii_only, separators=(",", ":"), default=str)
