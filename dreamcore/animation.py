"""Writing frames as an animated GIF, animated WebP or MP4, optionally within a byte budget.

GIF and WebP go through Pillow; MP4 through the ffmpeg binary that the imageio-ffmpeg package bundles
(H.264, yuv420p, faststart: what chat apps and browsers play). The settings travel inside the file as
JSON, as they do in still results. With ``max_bytes`` (a chat's upload limit), an animation that comes
out too large is encoded again, step by step smaller, until it fits.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image

from dreamcore.errors import DreamError, UsageError
from dreamcore.images import read_metadata, write_atomically

__all__ = [
    "ANIMATION_FORMATS",
    "animation_format",
    "encode_animation",
    "parse_size",
    "read_animation_metadata",
    "save_animation",
]

log = logging.getLogger("dreamcore")

ANIMATION_FORMATS = ("gif", "webp", "mp4")
_WRITABLE = ".gif, .webp or .mp4"

# Quality ladders, best first: GIF palette colours, WebP quality, x264 CRF (higher is smaller).
_QUALITY: dict[str, tuple[int, ...]] = {"gif": (256, 128, 64), "webp": (80, 60, 40, 25), "mp4": (20, 26, 32, 38)}
# The smallest longer side the size budget may shrink frames to; below this an animation shows nothing.
MIN_SIDE = 64
# GIF may drop frames down to a quarter of the frame rate to fit a budget (it has no inter-frame compression).
_MAX_FRAME_STEP = 4

# Pixels the GIF palette is computed from: enough to see every colour, few enough to take a fraction of a second.
_PALETTE_PIXELS = 2_000_000

# EXIF UserComment starts with an 8-byte character-code field (the layout dreamcore.images reads back).
_USER_COMMENT_ASCII = b"ASCII\x00\x00\x00"

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_SIZE_UNITS |= {"g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def animation_format(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for ("gif", "webp" or "mp4"), checking that its encoder is installed.

    Cheap, so callers can check an output path before minutes of dreaming rather than after.
    """
    path = Path(path)
    key = path.suffix.lower().lstrip(".")
    if key not in ANIMATION_FORMATS:
        what = f"as {path.suffix!r}" if path.suffix else f"'{path}' without a suffix"
        raise UsageError(f"Cannot save animations {what}; use a file name ending in {_WRITABLE}.")
    if key == "mp4":
        _ffmpeg()
    return key


def parse_size(text: str) -> int:
    """Bytes from "10M", "5MB", "10MiB", "500k" or "8000000". M and MB are 1000², MiB 1024²."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = found.group(2).lower() if found else ""
    if not found or unit not in _SIZE_UNITS:
        raise UsageError(f"Cannot read {text!r} as a size; write it like 10MiB (Discord), 5MB (X) or 800k.")
    size = int(float(found.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise UsageError(f"A size limit must be at least 1 byte (got {text!r}).")
    return size


@dataclass(frozen=True)
class _Plan:
    quality: int
    size: tuple[int, int]  # (width, height) of the encoded frames
    frame_step: int  # keep every n-th frame

    def describe(self, format: str, fps: float, frames: int) -> str:
        quality = {"gif": f"{self.quality} colours", "webp": f"quality {self.quality}", "mp4": f"CRF {self.quality}"}
        kept = len(range(0, frames, self.frame_step))
        rate = _fps_text(fps / self.frame_step)
        return f"{self.size[0]}x{self.size[1]}, {kept} frames at {rate} fps, {quality[format]}"


def encode_animation(
    frames: Sequence[Image.Image],
    format: str,
    fps: float,
    *,
    max_bytes: int | None = None,
    metadata: dict | None = None,
) -> bytes:
    """``frames`` (all one size) as a looping GIF or WebP, or an MP4, with ``metadata`` stored as JSON.

    With ``max_bytes``, a file that comes out larger is made again with lower quality, then smaller
    frames, then (GIF only) every other frame dropped, until it fits; a DreamError says so when it cannot
    fit even at the smallest size.
    """
    key = format.lower().lstrip(".")
    if key not in ANIMATION_FORMATS:
        raise UsageError(f"Cannot encode animations as {format!r}; choose one of {', '.join(ANIMATION_FORMATS)}.")
    if not 0 < fps <= 60:
        raise UsageError(f"fps must be above 0 and at most 60 (got {fps}).")
    if max_bytes is not None and max_bytes < 1:
        raise UsageError(f"The size limit must be at least 1 byte (got {max_bytes}).")
    rgb = _check_frames(frames)
    comment = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"), default=str) if metadata else None
    encoder = {"gif": _encode_gif, "webp": _encode_webp, "mp4": _encode_mp4}[key]
    ladder = _QUALITY[key]
    full = rgb[0].size

    def attempt(plan: _Plan) -> bytes:
        chosen = rgb[:: plan.frame_step]
        if plan.size != full:
            chosen = [frame.resize(plan.size, Image.Resampling.LANCZOS, reducing_gap=3.0) for frame in chosen]
        return encoder(chosen, fps / plan.frame_step, plan.quality, comment)

    plan = _Plan(ladder[0], _even(full) if key == "mp4" else full, 1)
    data = attempt(plan)
    if max_bytes is None or len(data) <= max_bytes:
        return data
    sizes = [len(data)]
    for plan in _smaller_plans(key, ladder, full, len(rgb), max_bytes, sizes):
        data = attempt(plan)
        sizes.append(len(data))
        if len(data) <= max_bytes:
            log.warning(
                "Shrank the %s from %s to %s bytes to fit the limit of %s bytes: %s.",
                key.upper(),
                f"{sizes[0]:,}",
                f"{len(data):,}",
                f"{max_bytes:,}",
                plan.describe(key, fps, len(rgb)),
            )
            return data
    raise DreamError(
        f"The animation does not fit in {max_bytes:,} bytes: even at {plan.describe(key, fps, len(rgb))} it takes "
        f"{len(data):,} bytes. Allow a larger file, or make fewer or smaller frames."
    )


def _smaller_plans(
    key: str, ladder: tuple[int, ...], full: tuple[int, int], count: int, max_bytes: int, sizes: list[int]
) -> Iterator[_Plan]:
    """Ever smaller encodings to try: lower quality, then smaller frames, then (GIF) fewer frames.

    Scaling is guided by the size of the last attempt (``sizes[-1]``; bytes grow about with the pixel
    count), so a file ten times too large does not take ten attempts.
    """
    for quality in ladder[1:]:
        yield _Plan(quality, _even(full) if key == "mp4" else full, 1)
    quality = ladder[-1]
    longest = max(full)
    floor = min(longest, MIN_SIDE)
    # GIF drops frames once the frames are half size: a smaller picture helps less than a lower frame rate then.
    drop_below = max(floor, longest // 2) if key == "gif" else floor
    side, step = longest, 1
    while True:
        may_drop = key == "gif" and step < _MAX_FRAME_STEP and len(range(0, count, step * 2)) >= 2
        if may_drop and side <= drop_below:
            step *= 2
        elif side > floor:
            factor = min(0.9, max(0.5, 0.95 * math.sqrt(max_bytes / sizes[-1])))
            side = max(floor, round(side * factor))
            if may_drop:
                side = max(side, drop_below)
        else:
            return
        size = _fit(full, side)
        yield _Plan(quality, _even(size) if key == "mp4" else size, step)


def save_animation(
    frames: Sequence[Image.Image],
    path: str | os.PathLike[str],
    fps: float,
    max_bytes: int | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write ``frames`` to ``path`` as GIF, WebP or MP4 (from the suffix); the file appears complete or not at all."""
    path = Path(path)
    data = encode_animation(frames, animation_format(path), fps, max_bytes=max_bytes, metadata=metadata)
    return write_atomically(path, data)


def read_animation_metadata(path: str | os.PathLike[str]) -> dict | None:
    """The JSON :func:`save_animation` stored in a GIF, WebP or MP4 (or a still result), or None."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        return read_metadata(path)
    if not path.is_file():
        raise DreamError(f"Cannot find '{path}'. Check the path and try again.")
    result = subprocess.run(
        [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise DreamError(f"Cannot read '{path}' as an MP4 video; check that the file is complete.")
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        if line.startswith("comment="):
            # ffmetadata escapes =, ;, #, \ and newlines with a backslash.
            text = re.sub(r"\\(.)", r"\1", line[len("comment=") :])
            try:
                value = json.loads(text)
            except ValueError:
                continue  # a comment some other program wrote
            if isinstance(value, dict):
                return value
    return None


# --------------------------------------------------------------------------------------------- encoders


def _encode_gif(frames: list[Image.Image], fps: float, colours: int, comment: str | None) -> bytes:
    # One palette for the whole animation, from frames across it, and Floyd-Steinberg dithering: as
    # faithful to the eye as a palette per frame, but colours cannot flicker as each frame's palette
    # shifts, it is written once, and it quantizes 4x faster (which matters when a size budget retries).
    palette = _shared_palette(frames, colours)
    paletted = [frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for frame in frames]
    # Browsers play GIF delays under 20 ms as 100 ms, so above 50 fps frames are held for 20 ms.
    options: dict = {"duration": _durations(len(frames), fps, 10, 20), "loop": 0, "disposal": 1}
    if comment is not None:
        options["comment"] = comment.encode("ascii")
    buffer = io.BytesIO()
    try:
        paletted[0].save(buffer, format="GIF", save_all=True, append_images=paletted[1:], **options)
    except (OSError, ValueError) as error:
        raise DreamError(f"Could not encode the animation as GIF ({error}).") from error
    return buffer.getvalue()


def _shared_palette(frames: list[Image.Image], colours: int) -> Image.Image:
    """A median-cut palette of up to 16 frames spread over the animation, sampled to about 2 megapixels."""
    picks = [frames[round(i * (len(frames) - 1) / 15)] for i in range(16)] if len(frames) > 16 else frames
    width, height = picks[0].size
    scale = min(1.0, math.sqrt(_PALETTE_PIXELS / (len(picks) * width * height)))
    tile = (max(1, round(width * scale)), max(1, round(height * scale)))
    mosaic = Image.new("RGB", (tile[0], tile[1] * len(picks)))
    for index, frame in enumerate(picks):
        # Nearest-neighbour sampling keeps the real colours; averaging would dull the brightest ones.
        sample = frame if tile == frame.size else frame.resize(tile, Image.Resampling.NEAREST)
        mosaic.paste(sample, (0, index * tile[1]))
    return mosaic.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)


def _encode_webp(frames: list[Image.Image], fps: float, quality: int, comment: str | None) -> bytes:
    options: dict = {"duration": _durations(len(frames), fps, 1, 1), "loop": 0, "quality": quality, "method": 4}
    if comment is not None:
        # Pillow reads WebP EXIF back; UserComment in the Exif IFD is where dreamcore.images looks.
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = _USER_COMMENT_ASCII + comment.encode("ascii")
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    try:
        frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], **options)
    except (OSError, ValueError) as error:
        raise DreamError(f"Could not encode the animation as WebP ({error}).") from error
    return buffer.getvalue()


def _encode_mp4(frames: list[Image.Image], fps: float, crf: int, comment: str | None) -> bytes:
    width, height = _even(frames[0].size)
    command = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _fps_text(fps)]
    command += ["-i", "-", "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf)]
    # yuv420p and faststart: the H.264 flavour every browser and chat app plays, and plays while loading.
    command += ["-pix_fmt", "yuv420p", "-movflags", "+faststart", "-map_metadata", "-1"]
    if comment is not None:
        command += ["-metadata", f"comment={comment}"]
    with tempfile.TemporaryDirectory(prefix="dreamcore-") as folder:
        output = Path(folder) / "animation.mp4"
        # Errors go to a file: a pipe nobody reads could fill up and stall ffmpeg while we write frames.
        with open(Path(folder) / "ffmpeg.log", "w+b") as errors:
            process = subprocess.Popen([*command, str(output)], stdin=subprocess.PIPE, stderr=errors)
            assert process.stdin is not None
            try:
                for frame in frames:
                    if frame.size != (width, height):
                        frame = frame.crop((0, 0, width, height))  # x264 needs even sides: drop the odd edge
                    process.stdin.write(frame.tobytes())
                process.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its exit code and log say why
            code = process.wait()
            errors.seek(0)
            log_text = errors.read().decode("utf-8", errors="replace").strip()
        if code != 0 or not output.is_file():
            detail = log_text.splitlines()[-1] if log_text else f"exit code {code}"
            raise DreamError(f"ffmpeg could not encode the MP4 ({detail}); try saving a .gif or .webp instead.")
        return output.read_bytes()


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise DreamError(
            "Saving MP4 needs the imageio-ffmpeg package: install it with `pip install imageio-ffmpeg`, "
            "or save a .gif or .webp instead."
        ) from error
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise DreamError(
            f"No ffmpeg binary was found for MP4 ({error}); reinstall imageio-ffmpeg, or save a .gif or .webp."
        ) from error


# --------------------------------------------------------------------------------------------- helpers


def _check_frames(frames: Sequence[Image.Image]) -> list[Image.Image]:
    if not frames:
        raise UsageError("An animation needs at least one frame.")
    size = frames[0].size
    if any(frame.size != size for frame in frames):
        raise UsageError("Every frame of an animation must have the same size.")
    return [frame if frame.mode == "RGB" else frame.convert("RGB") for frame in frames]


def _durations(count: int, fps: float, tick: int, shortest: int) -> list[int]:
    """Frame durations in ms, in multiples of ``tick`` (GIF counts in 10 ms), that add up to the right total.

    12 fps in GIF is 80, 90, 80, 80, 90, ... rather than 80 every time, which would play 4% fast.
    """
    ends = [round((i + 1) * 1000 / fps / tick) * tick for i in range(count)]
    starts = [0, *ends[:-1]]
    return [max(shortest, end - start) for start, end in zip(starts, ends, strict=True)]


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    width, height = size
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2)


def _fps_text(fps: float) -> str:
    return f"{fps:g}" if fps == round(fps, 3) else f"{fps:.3f}"
