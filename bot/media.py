"""The one way images come in and the one way results go out, for every platform.

In: a byte-size cap before anything is decoded, allowed formats recognised from their first bytes
(not from a file name or a claimed content type), the decompression-bomb limit read from the header,
then dreamcore's loader (EXIF orientation, first frame, colour modes, scaled to the working size).
Out: a result encoded to fit a destination's upload limit, without the metadata of a user's photo.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from dreamcore.errors import ImageError
from dreamcore.images import LoadedImage, encode_image, load_image

# Formats recognised by their signature; anything else is refused before decoding.
SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "WEBP": (b"RIFF",),  # plus "WEBP" at offset 8, checked below
}


class MediaError(ValueError):
    """An image the service will not take; ``str()`` says why and what to send instead."""


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # decompression-bomb limit, from the header
    working_side: int = 1024  # larger photos are scaled down to this longer side before dreaming
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")


def file_size(size: int) -> str:
    """ "20 MB", "1.5 MB", "300 KB": sizes as people read them (MB = 2**20 bytes, as upload limits are)."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{round(size / scale, 1):g} {unit}"
    return f"{size} bytes"


def sniff_format(data: bytes) -> str | None:
    for name, signatures in SIGNATURES.items():
        if any(data.startswith(signature) for signature in signatures):
            if name == "WEBP" and data[8:12] != b"WEBP":
                continue
            return name
    return None


def check_size(size: int, limits: MediaLimits) -> None:
    """The byte cap, checkable before a download (an adapter knows an attachment's size from its listing)."""
    if size > limits.max_bytes:
        raise MediaError(
            f"That file is {file_size(size)}; the limit is {file_size(limits.max_bytes)}. Send a smaller photo."
        )


def ingest(data: bytes, limits: MediaLimits) -> LoadedImage:
    """Check and decode an uploaded image; raises MediaError with a sentence for the person who sent it."""
    if not data:
        raise MediaError("The file is empty; send a photo (PNG, JPEG, WebP or GIF).")
    check_size(len(data), limits)
    found = sniff_format(data)
    if found is None or found not in limits.formats:
        allowed = ", ".join("WebP" if f == "WEBP" else f for f in limits.formats)
        what = f"a {found} image" if found else "not an image I can read"
        raise MediaError(f"That file is {what}; send a photo as {allowed}.")
    try:
        return load_image(data, max_pixels=limits.max_pixels, max_side=limits.working_side)
    except ImageError as error:
        if "megapixels" in str(error):  # too large: dreamcore's sentence gives the sizes
            raise MediaError(str(error).replace("The uploaded data", "That image")) from None
        # It starts like an image we take, so it is damaged or cut short, whatever the decoder said.
        name = "WebP" if found == "WEBP" else found
        raise MediaError(
            f"That {name} file is damaged or incomplete, so it cannot be read; save or download it again and resend it."
        ) from None


def encode_to_fit(image: Image.Image, max_bytes: int, *, prefer: str = "png", metadata: dict | None = None) -> bytes:
    """``image`` as PNG if it fits in ``max_bytes``, else as JPEG at falling quality, then smaller, until it fits.

    ``metadata`` (our settings, never the user's EXIF) is written where the format allows.
    """
    if prefer == "png":
        data = encode_image(image, "png", metadata)
        if len(data) <= max_bytes:
            return data
    current = image
    while True:
        for quality in (92, 85, 75, 60):
            data = encode_image(current, "jpg", metadata) if quality == 92 else _jpeg(current, quality)
            if len(data) <= max_bytes:
                return data
        if max(current.size) <= 64:
            raise MediaError("The result cannot be made small enough for this destination.")
        current = current.resize((max(1, current.width * 3 // 4), max(1, current.height * 3 // 4)), Image.LANCZOS)


# Upload limits of each destination (adapters may know better, e.g. a Discord guild's boosted limit).
DESTINATION_LIMITS = {"discord": 10 * 2**20, "x": 5 * 10**6, "mastodon": 8 * 2**20, "web": 10 * 2**20}


def fit_result(data: bytes, extension: str, max_bytes: int) -> tuple[bytes, str]:
    """A stored result made to fit ``max_bytes``: returned as it is when it fits, else re-encoded smaller.

    Stills become JPEG at falling quality and size; animations are re-encoded with fewer colours, smaller
    frames, then fewer frames. Returns the bytes and their extension.
    """
    if len(data) <= max_bytes:
        return data, extension
    if extension == "gif":
        from dreamcore.animation import encode_animation
        from dreamcore.images import first_json_object

        with Image.open(io.BytesIO(data)) as animation:
            frames, durations = [], []
            for index in range(getattr(animation, "n_frames", 1)):
                animation.seek(index)
                frames.append(animation.convert("RGB"))
                durations.append(animation.info.get("duration", 83) or 83)
            metadata = first_json_object([animation.info.get("comment", b"").decode("utf-8", "ignore")])
        fps = 1000 / (sum(durations) / len(durations))
        return encode_animation(frames, "gif", fps, max_bytes=max_bytes, metadata=metadata), "gif"
    with Image.open(io.BytesIO(data)) as still:
        still.load()
        picture = still.copy()
    fitted = encode_to_fit(picture, max_bytes, prefer="jpg")
    return fitted, "jpg"


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
