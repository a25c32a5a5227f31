"""What the X, Mastodon and Bluesky end-to-end tests share: the stand-in engine, photos, a clock, the running bot.

Below the adapter everything is real: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engine is a small stand-in that changes the picture (inverts it; a zoom gives a short GIF).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, ImageOps

from bot.config import Config, MediaConfig, QueueConfig, WorkerConfig
from bot.engine import NullEngine, Rendered
from bot.options import Mode
from bot.service import DreamService

DATA = Path(__file__).parents[1] / "data"

Adapter = TypeVar("Adapter")


def photo(color: tuple[int, int, int] = (200, 120, 40), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((20, 200, 90), (8, 8, 30, 30))
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


class Inverting(NullEngine):
    """Dreams by inverting the photo; a zoom is a three-frame GIF of it."""

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        picture = ImageOps.invert(image.rgb.convert("RGB"))
        if command.mode == Mode.ZOOM:
            buffer = io.BytesIO()
            frames = [picture, picture.rotate(5), picture.rotate(10)]
            frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
            return Rendered(buffer.getvalue(), "gif", picture.width, picture.height, "zoom · 3 frames", {})
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        return Rendered(buffer.getvalue(), "png", picture.width, picture.height, "lite0 block9 · default", {})


class Clock:
    def __init__(self, when: str = "2026-03-10T12:00:00") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def adapter_config(tmp_path: Path, **platforms: Any) -> Config:
    """A small, fast service configuration with the given platform sections (``x=XConfig(...)``, ...)."""
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        media=MediaConfig(working_side=96),
        **platforms,
    )


@asynccontextmanager
async def running(config: Config, adapter_of: Callable[[DreamService], Adapter]) -> AsyncIterator[Adapter]:
    """The service with the inverting engine and one adapter, started without its poll loop (tests poll)."""
    service = await DreamService.open(config, Inverting())
    service.start()
    adapter: Any = adapter_of(service)
    try:
        await adapter.start(poll=False)
        yield adapter
    finally:
        await adapter.close()
        await service.close()


async def settled(adapter: Any) -> None:
    """Every queued job finished and its answer delivered."""
    from bot.jobqueue import JobState

    async def busy() -> bool:
        counts = await adapter.service.queue.counts()
        return bool(counts.get(JobState.QUEUED, 0) or counts.get(JobState.RUNNING, 0))

    deadline = time.monotonic() + 10
    while await busy() or any(
        not listener.inbox.empty() or (listener.task and not listener.task.done())
        for listener in adapter.service._listeners
    ):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
