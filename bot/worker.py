"""The dreaming worker: takes jobs from the queue and runs the engine in its own thread.

One worker per device, with a one-thread executor, so the network stays loaded and warm and the event
loop never waits on a dream. Progress crosses from the dreaming thread to the loop with
``call_soon_threadsafe``, at most every ``progress_interval`` seconds; cancellation crosses back
through a ``threading.Event`` that the engine checks at every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from bot.engine import Engine, Rendered
from bot.jobqueue import Job, JobNotRunning, JobQueue
from bot.media import MediaError
from bot.options import OptionError
from bot.requests import DreamRequest
from bot.store import FileStore
from dreamcore.api import preview_image
from dreamcore.errors import Cancelled, DreamError, WeightsError
from dreamcore.images import load_image
from dreamcore.settings import DreamSettings

log = logging.getLogger(__name__)

PREVIEW_SIDE = 256


@dataclass
class Progress:
    job_id: str
    fraction: float
    text: str
    preview: bytes | None  # a small JPEG of the picture as it is now


@dataclass
class WorkerHooks:
    """What the service wants to hear: called on the loop thread."""

    on_change: Callable[[Job], Awaitable[None]]
    on_progress: Callable[[Progress], None]


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        store: FileStore,
        engine: Engine,
        hooks: WorkerHooks,
        *,
        time_limit: float = 900.0,
        progress_interval: float = 1.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.queue = queue
        self.store = store
        self.engine = engine
        self.hooks = hooks
        self.time_limit = time_limit
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval  # jobs submitted by another process are noticed this fast
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreaming")
        self.wakeup = asyncio.Event()
        self.current: Job | None = None
        self._stop_current = threading.Event()
        self.tasks = TaskSet()
        self.dream_seconds: list[float] = []  # of finished dreams, for the metrics page
        self._closing = False

    def describe(self) -> list[dict[str, Any]]:
        """This in-process worker, in the shape `dreambot status` shows Celery workers."""
        return [
            {
                "name": "local",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "device": getattr(self.engine, "device", "cpu"),
                "state": "ready",
                "current_job": self.current.id if self.current else None,
                "jobs_done": len(self.dream_seconds),
                "last_heartbeat": time.time(),
            }
        ]

    def notify(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self.wakeup.set()

    def cancel_current(self, job_id: str) -> None:
        if self.current is not None and self.current.id == job_id:
            self._stop_current.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.engine.warm_up)
        job: Job | None = None
        while not self._closing:
            if job is None:
                self.wakeup.clear()
                job = await self.queue.claim()
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=self.poll_interval)
                continue
            job = await self.process(job)
        if job is not None:  # claimed just as the service began to stop: back to the queue, attempt not counted
            await self.queue.release(job.id)
            self.current = None

    async def close(self, timeout: float = 30.0) -> None:
        """Stop: a dream in progress stops at its next step and goes back to the queue, its attempt not counted."""
        self._closing = True
        self._stop_current.set()
        self.wakeup.set()
        deadline = time.monotonic() + timeout
        while self.current is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def process(self, job: Job) -> Job | None:
        """Dream one job and record how it ended; returns the next job when it could be claimed on the way."""
        loop = asyncio.get_running_loop()
        next_job: Job | None = None
        self.current = job
        self._stop_current = stop = threading.Event()
        started = time.monotonic()
        deadline = started + self.time_limit
        await self.hooks.on_change(job)

        def should_stop() -> bool:
            return stop.is_set() or time.monotonic() > deadline

        last_sent = [0.0]

        def report(fraction: float, text: str, image: torch.Tensor | None) -> None:
            # On the dreaming thread: throttle here, so quiet steps cost nothing on the loop.
            now = time.monotonic()
            if now - last_sent[0] < self.progress_interval and fraction < 1.0:
                return
            last_sent[0] = now
            preview = _preview_jpeg(image) if image is not None else None
            loop.call_soon_threadsafe(self._progress, Progress(job.id, fraction, text, preview), stop)

        def dream_and_store() -> tuple[Rendered, str]:
            # All on the dreaming thread: decoding the photo and writing the result take milliseconds
            # that the event loop should spend on other people.
            request = DreamRequest.from_json(job.payload)
            image = load_image(self.store.get(request.image_key)) if request.image_key else None
            rendered = self.engine.render(request.command, image, report, should_stop)
            return rendered, self.store.put(rendered.data, rendered.extension)

        try:
            rendered, key = await loop.run_in_executor(self.executor, dream_and_store)
        except Cancelled:
            if self._closing:
                # Shutting down is not the job's fault: it waits in the queue for the next start.
                await self.queue.release(job.id)
                return
            if stop.is_set():
                finished = await self.queue.mark_cancelled(job.id)
            else:
                finished = await self.queue.fail(
                    job.id,
                    f"This dream took longer than {duration(self.time_limit)} and was stopped; "
                    "try fewer octaves, fewer steps or a smaller picture.",
                )
        except WeightsError as error:
            # The operator's to fix (the message names server paths and commands): logged, and the person
            # hears a sentence. Rare: networks without weights are refused at submit (bot/networks.py).
            log.warning("job %s: %s", job.id, error)
            network = DreamRequest.from_json(job.payload).command.options.get("network") or DreamSettings.network
            finished = await self.queue.fail(job.id, f"{network} is not installed on this bot right now; try lite0.")
        except (DreamError, OptionError, MediaError) as error:
            finished = await self.queue.fail(job.id, str(error))  # the request itself is wrong: final
        except Exception as error:
            log.exception("job %s failed in the engine", job.id)
            finished = await self.queue.retry(job.id, f"{type(error).__name__}: {error}")
        else:
            seconds = time.monotonic() - started
            self.dream_seconds.append(seconds)
            result = {
                "key": key,
                "width": rendered.width,
                "height": rendered.height,
                "caption": rendered.caption,
                "settings": rendered.settings,
                "seconds": round(seconds, 2),
            }
            finishing = asyncio.ensure_future(self.queue.finish(job.id, json.dumps(result)))
            # The next job is claimed alongside: the queue's thread takes both in one trip.
            claiming = None if self._closing else asyncio.ensure_future(self.queue.claim())
            try:
                finished = await finishing
            except JobNotRunning as error:  # cancelled by another process in the last instant
                finished = error.job
            next_job = await claiming if claiming is not None else None
        finally:
            self.current = None
        self.current = next_job  # so close() waits until it is released or done
        await self.hooks.on_change(finished)
        return next_job

    def _progress(self, progress: Progress, stop: threading.Event) -> None:
        self.hooks.on_progress(progress)
        self.tasks.spawn(self._save_progress(progress, stop))

    async def _save_progress(self, progress: Progress, stop: threading.Event) -> None:
        try:
            if await self.queue.set_progress(progress.job_id, progress.fraction, progress.text):
                stop.set()  # cancelled, possibly from another process (`dreambot cancel`)
        except Exception:  # progress is best effort; the job's outcome is recorded elsewhere
            log.debug("could not store progress of %s", progress.job_id, exc_info=True)


def duration(seconds: float) -> str:
    """ "15 minutes", "1 minute", "30 seconds", "2 hours": how people say it."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size:
            amount = round(seconds / size, 1)
            amount_text = f"{amount:g}"
            return f"{amount_text} {unit}{'' if amount_text == '1' else 's'}"
    amount_text = f"{max(1, round(seconds)):g}"
    return f"{amount_text} second{'' if amount_text == '1' else 's'}"


class TaskSet:
    """Background tasks, each held until it ends (asyncio itself keeps only weak references to tasks)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _preview_jpeg(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    preview_image(image.cpu(), PREVIEW_SIDE).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
