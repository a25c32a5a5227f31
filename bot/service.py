"""The service's core, wired in one place: queue, file store, worker, expiry and the events adapters hear.

Adapters call :meth:`DreamService.submit`, :meth:`cancel` and :meth:`view`, and listen with
:meth:`subscribe` (one job, for live pages) or :meth:`add_listener` (every job of their platform, for
posting results to chats). Nothing here knows any platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bot.config import Config
from bot.engine import DreamcoreEngine, Engine
from bot.jobqueue import FINISHED_STATES, Job, JobQueue, JobState, Priority, QueueError, QueueLimits, QueueRefused
from bot.media import MediaLimits, ingest
from bot.networks import network_offers, usable_networks
from bot.options import offered_network
from bot.requests import DreamRequest
from bot.sharing import SharedDreams
from bot.store import FileStore
from bot.worker import Progress, TaskSet, Worker, WorkerHooks
from dreamcore.images import encode_image, finish_image
from dreamcore.settings import DreamSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobView:
    """What a person may see of a job: adapters render this, never the database row."""

    id: str
    state: str
    mode: str
    subject: str
    options: dict[str, Any]
    requester: str  # display name
    platform: str
    created_at: float
    position: int | None = None  # jobs ahead of it, while queued
    eta_seconds: float | None = None
    progress: float = 0.0
    progress_text: str = ""
    result: dict[str, Any] | None = None  # key, width, height, caption, settings, seconds
    error: str | None = None
    cached: bool = False
    has_preview: bool = False
    destination: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in {s.value for s in FINISHED_STATES}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Listener = Callable[[JobView], Awaitable[None]]


class DreamService:
    def __init__(self, config: Config, queue: JobQueue, store: FileStore, engine: Engine) -> None:
        self.config = config
        self.queue = queue
        self.store = store
        self.media_limits = MediaLimits(
            max_bytes=int(config.media.max_upload_mb * 2**20),
            max_pixels=int(config.media.max_megapixels * 1e6),
            working_side=config.media.working_side,
        )
        self.worker = Worker(
            queue,
            store,
            engine,
            WorkerHooks(on_change=self._changed, on_progress=self._progressed),
            time_limit=config.worker.time_limit_seconds,
            progress_interval=config.worker.progress_interval_seconds,
        )
        if config.worker.backend == "celery":  # dreams go to `dreambot worker` processes; the queue stays here
            from bot.celery_backend import CeleryWorkers

            hooks = WorkerHooks(on_change=self._changed, on_progress=self._progressed)
            self.worker = CeleryWorkers(queue, store, hooks, config)  # type: ignore[assignment]
        self.previews: dict[str, bytes] = {}  # job id -> latest preview, while it runs
        self._subscribers: dict[str, set[asyncio.Queue[JobView]]] = {}
        self._listeners: list[ListenerInbox] = []
        self._states: OrderedDict[str, str] = OrderedDict()  # job id -> its newest state published
        self._loops: list[asyncio.Task] = []  # worker, expiry, loop-lag: run until close()
        self.tasks = TaskSet()  # short-lived background work: publishing progress, telling owners
        self.loop_lag = LoopLagMonitor()
        self.started_at = time.time()
        self._positions_published = 0.0
        self.recovered: list[Job] = []  # jobs a crash left running: re-queued, or failed at max attempts
        # Adapters that report numbers of their own (X's spend and budget), by platform: shown in status().
        self.platform_status: dict[str, Callable[[], dict[str, Any]]] = {}
        # Scheduled posts: results their owners shared (and their likes), and the scheduler's latest web post,
        # which the gallery shows first (set by bot.app when schedules run).
        self.sharing = SharedDreams(config.database_path)
        self.featured: Callable[[], Awaitable[dict[str, Any] | None]] | None = None

    # ------------------------------------------------------------------ life cycle

    @classmethod
    async def open(cls, config: Config, engine: Engine | None = None) -> DreamService:
        """Open the database and file store and recover jobs a crash left running; :meth:`start` starts work."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        limits = QueueLimits(
            per_user=config.queue.per_user,
            cooldown_seconds=config.queue.cooldown_seconds,
            global_cap=config.queue.global_cap,
            max_attempts=config.queue.max_attempts,
        )
        queue = await JobQueue.open(config.database_path, limits)
        service = cls(config, queue, FileStore(config.files_dir), engine or DreamcoreEngine(config.worker.device))
        if config.worker.backend == "local":  # Celery workers may still be dreaming what is running: not recovered
            service.recovered = await queue.recover()
        for job in service.recovered:
            log.info("recovered job %s (%s) after a restart", job.id, job.state.value)
        return service

    def start(self) -> None:
        """Start the worker and housekeeping; owners of jobs dropped at start-up are told (via the listeners)."""
        for job in self.recovered:
            if job.finished:
                self.tasks.spawn(self._changed(job))
        for offer in network_offers(self.config.worker.download_weights):
            if not offer.usable:  # for the operator only; people are simply not offered the network
                log.info("not offered to people: %s", offer.hint)
        self._loops = [
            asyncio.create_task(self.worker.run(), name="worker"),
            asyncio.create_task(self._expire_forever(), name="expiry"),
            asyncio.create_task(self.loop_lag.run(), name="loop-lag"),
        ]

    async def close(self) -> None:
        await self.worker.close()  # a dream in progress stops and goes back to the queue, attempt not counted
        for listener in self._listeners:
            await listener.drain(timeout=5.0)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.queue.close()
        self.sharing.close()

    # ------------------------------------------------------------------ requests

    async def submit(
        self, request: DreamRequest, priority: Priority = Priority.INTERACTIVE, *, per_user_limit: int | None = None
    ) -> JobView:
        """Check, store and queue a request. Raises OptionError, MediaError or QueueRefused (sentences).

        ``per_user_limit`` is a stricter limit a community set for itself (a Discord server's setting).
        """
        self._check_network(request)
        if per_user_limit is not None and not request.requester.admin:
            await self._check_community_limit(request.requester.key, per_user_limit)
        if request.image is not None:
            key = await asyncio.get_running_loop().run_in_executor(None, self._store_input, request.image)
            request = request.with_image_key(key)
        job = await self.queue.submit(
            request.to_json(),
            user=request.requester.key,
            priority=priority,
            fingerprint=request.fingerprint(),
            exempt=request.requester.admin or priority is Priority.SCHEDULED,
        )
        # Published before anything else can run: listeners hear "queued" before the worker's "running".
        self._publish(self._view_of(job), transition=True)
        self.worker.notify()
        view = await self.view(job)
        if view.state == JobState.QUEUED.value:
            self._publish(view)  # now with its place in line, unless the worker has already started it
        return view

    def networks(self) -> list[str]:
        """The networks people may ask for here: installed, or downloadable when worker.download_weights is on.

        Read afresh each time (a file check per network), so a network imported while the bot runs is offered.
        """
        return usable_networks(self.config.worker.download_weights)

    def _check_network(self, request: DreamRequest) -> None:
        """Refused now with a sentence, rather than failing with the operator's install hint after waiting."""
        # No network named: dreamcore's default (DreamSettings and DrawSettings agree on it).
        offered_network(request.command.options.get("network") or DreamSettings.network, self.networks())

    async def _check_community_limit(self, user: str, limit: int) -> None:
        active = await self.queue.jobs_of(user, [JobState.QUEUED, JobState.RUNNING], limit=limit + 1)
        if len(active) >= limit:
            dreams = "dream" if limit == 1 else "dreams"
            raise QueueRefused(
                "user_limit",
                self.worker_average(),
                f"This server allows {limit} {dreams} waiting per person; wait for one to finish or cancel one.",
            )

    def _store_input(self, data: bytes) -> str:
        """Decode and normalise once (upright, RGB, working size, no EXIF); the worker reads this copy."""
        loaded = ingest(data, self.media_limits)
        return self.store.put(encode_image(finish_image(loaded.rgb, loaded), "png"), "png")

    async def cancel(self, job_id: str, *, by_user: str | None = None, admin: bool = False) -> JobView:
        job = await self.queue.cancel(job_id, by_user=by_user, admin=admin)
        if job.cancel_requested and job.state == JobState.RUNNING:
            self.worker.cancel_current(job_id)
        view = await self.view(job)
        self._publish(view, transition=True)
        return view

    async def request_of(self, job_id: str) -> DreamRequest:
        """The request behind a job (image by key), e.g. to dream it again with other options."""
        return DreamRequest.from_json((await self.queue.get(job_id)).payload)

    async def view(self, job: Job | str) -> JobView:
        if isinstance(job, str):
            job = await self.queue.get(job)
        position = eta = None
        if job.state == JobState.QUEUED:
            position, eta = await self.queue.place(job.id)
            if self.worker.current is not None:
                eta = (eta or 0.0) + self._remaining_of_current()
        return self._view_of(job, position, eta)

    def _view_of(self, job: Job, position: int | None = None, eta: float | None = None) -> JobView:
        request = DreamRequest.from_json(job.payload)
        return JobView(
            id=job.id,
            state=job.state.value,
            mode=request.command.mode.value,
            subject=request.command.subject,
            options=request.command.options,
            requester=request.requester.display_name or request.requester.user_id,
            platform=request.requester.platform,
            created_at=job.created_at,
            position=position,
            eta_seconds=None if eta is None else round(eta, 1),
            progress=job.progress,
            progress_text=job.progress_text,
            result=json.loads(job.result) if job.result else None,
            error=job.error,
            cached=job.cached,
            has_preview=job.id in self.previews,
            destination=request.destination.address,
        )

    def _remaining_of_current(self) -> float:
        current = self.worker.current
        if current is None or current.started_at is None:
            return 0.0
        elapsed = time.time() - current.started_at
        return max(0.0, self.worker_average() - elapsed)

    def worker_average(self) -> float:
        recent = self.worker.dream_seconds[-20:]
        return sum(recent) / len(recent) if recent else 30.0

    async def gallery(self, limit: int | None = None) -> list[JobView]:
        """Recent dreams that are public: made on the web page, or posted where everyone saw them.

        A photo someone sent privately (a chat's direct message) never shows up here.
        """
        limit = limit or self.config.web.gallery_size
        views = []
        for job in await self.queue.recent(JobState.DONE, limit=limit * 4):
            view = await self.view(job)
            if view.platform == "web" or view.destination.get("public") is True:
                views.append(view)
            if len(views) == limit:
                break
        return views

    # ------------------------------------------------------------------ events

    def subscribe(self, job_id: str) -> AsyncIterator[JobView]:
        """Every change of one job (queued position, progress, the end), until it finishes."""
        return self._follow(job_id)

    async def _follow(self, job_id: str) -> AsyncIterator[JobView]:
        inbox: asyncio.Queue[JobView] = asyncio.Queue(maxsize=64)
        self._subscribers.setdefault(job_id, set()).add(inbox)
        try:
            view = await self.view(job_id)
            yield view
            while not view.finished:
                try:
                    view = await asyncio.wait_for(inbox.get(), timeout=5.0)
                except TimeoutError:  # positions move as others finish: refresh now and then
                    view = await self.view(job_id)
                yield view
        finally:
            self._subscribers[job_id].discard(inbox)
            if not self._subscribers[job_id]:
                del self._subscribers[job_id]

    def add_listener(self, listener: Listener, platform: str | None = None) -> None:
        """``listener(view)`` hears every change of every job (of ``platform``, when given), in order.

        Each listener has its own inbox, delivered in the background: a slow chat post never delays the
        worker or another listener.
        """
        self._listeners.append(ListenerInbox(listener, platform))

    def _publish(self, view: JobView, *, transition: bool = False) -> None:
        """Tell subscribers and listeners. ``transition`` views come from a change of state itself; others
        (progress, positions) were computed a moment ago and are dropped once the state has moved on."""
        if transition:
            self._states[view.id] = view.state
            self._states.move_to_end(view.id)
            while len(self._states) > 10_000:
                self._states.popitem(last=False)
        elif self._states.get(view.id, view.state) != view.state:
            return  # e.g. progress that arrives after the end, or a place in line after the dream started
        for inbox in self._subscribers.get(view.id, ()):
            if inbox.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    inbox.get_nowait()  # a slow reader gets the newest state, not a backlog
            inbox.put_nowait(view)
        for listener in self._listeners:
            listener.deliver(view)

    async def _changed(self, job: Job) -> None:
        if job.finished:
            self.previews.pop(job.id, None)
        self._publish(await self.view(job), transition=True)
        if job.state == JobState.RUNNING and time.monotonic() - self._positions_published > 1.0:
            # The line moved: waiting people hear their new place (at most once a second, for the first 50).
            self._positions_published = time.monotonic()
            queued = await self.queue.all_jobs([JobState.QUEUED], limit=500)
            for waiting in sorted(queued, key=lambda j: j.created_at)[:50]:
                with contextlib.suppress(QueueError):
                    self._publish(await self.view(waiting))

    def _progressed(self, progress: Progress) -> None:
        if progress.preview is not None:
            self.previews[progress.job_id] = progress.preview
        self.tasks.spawn(self._publish_progress(progress))

    async def _publish_progress(self, progress: Progress) -> None:
        with contextlib.suppress(Exception):
            view = await self.view(progress.job_id)
            if not view.finished:
                # The row may lag a step behind; the fresh numbers are these.
                self._publish(replace(view, progress=progress.fraction, progress_text=progress.text, has_preview=True))

    # ------------------------------------------------------------------ housekeeping

    async def expire(self) -> int:
        """Remove finished jobs older than results.keep_days, then the oldest while files pass results.max_gb."""
        cutoff = time.time() - self.config.results.keep_days * 86400
        removed = await self.queue.delete_finished_before(cutoff)
        await self._collect_garbage(released=_keys_of(removed))
        count = len(removed)
        budget = self.config.results.max_gb * 1e9
        while self.store.size_bytes() > budget:
            done = await self.queue.recent(JobState.DONE, limit=1_000_000, include_cached=True)
            if len(done) <= 1:
                break  # the newest result stays, whatever its size
            before = self.store.size_bytes()
            more = await self.queue.delete_finished_before((done[-1].finished_at or 0) + 1e-6)
            await self._collect_garbage(released=_keys_of(more))
            count += len(more)
            if not more or self.store.size_bytes() >= before:
                break  # nothing freed: stop rather than empty the gallery for nothing
        return count

    async def _collect_garbage(self, grace_seconds: float = 3600.0, released: set[str] = frozenset()) -> None:
        """Delete files no remaining job refers to (cached answers share their original's files).

        Files of rows just removed (``released``) go at once; other unreferenced files only after
        ``grace_seconds``, because an upload is stored a moment before its job row exists. Half-written
        files a crash left behind go after the grace period too.
        """
        referenced = _keys_of(await self.queue.all_jobs(limit=10**9))
        now = time.time()
        for key in self.store.all_keys():
            if key in referenced:
                continue
            if key in released or now - self.store.path(key).stat().st_mtime > grace_seconds:
                self.store.delete(key)
        self.store.remove_partials(older_than=now - grace_seconds)

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.expire()
            except Exception:
                log.exception("expiry failed")
            await asyncio.sleep(3600)

    async def status(self) -> dict[str, Any]:
        counts = await self.queue.counts()
        return {
            "jobs": {state.value: count for state, count in counts.items()},
            "running": self.worker.current.id if self.worker.current else None,
            "average_dream_seconds": round(self.worker_average(), 1),
            "loop_lag_p99_ms": round(self.loop_lag.percentile(99) * 1000, 1),
            "uptime_seconds": round(time.time() - self.started_at),
            "backend": self.config.worker.backend,
            "workers": self.worker.describe(),
            **{platform: report() for platform, report in self.platform_status.items()},
        }


def _keys_of(jobs: list[Job]) -> set[str]:
    """The files jobs refer to: their stored input and their result."""
    keys: set[str] = set()
    for job in jobs:
        image_key = json.loads(job.payload).get("image_key")
        if image_key:
            keys.add(image_key)
        if job.result:
            keys.add(json.loads(job.result).get("key", ""))
    return keys


class ListenerInbox:
    """One listener's events, delivered one at a time in the order they happened."""

    def __init__(self, listener: Listener, platform: str | None) -> None:
        self.listener = listener
        self.platform = platform
        self.inbox: asyncio.Queue[JobView] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def deliver(self, view: JobView) -> None:
        if self.platform is not None and self.platform != view.platform:
            return
        self.inbox.put_nowait(view)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self.inbox.empty():
            view = self.inbox.get_nowait()
            try:
                await self.listener(view)
            except Exception:
                log.exception("a listener failed on job %s", view.id)

    async def drain(self, timeout: float) -> None:
        if self.task is not None and not self.task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.task), timeout)


class LoopLagMonitor:
    """How late the event loop wakes up from a short sleep: the delay every other coroutine sees too."""

    def __init__(self, interval: float = 0.05, keep: int = 2000) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, loop.time() - before - self.interval))

    def percentile(self, p: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
