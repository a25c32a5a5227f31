"""The bot's side of ``[worker] backend = "celery"``: hands jobs to `dreambot worker` processes, one per free worker.

It stands where the local :class:`bot.worker.Worker` stands and speaks to the service through the same hooks, so
adapters see the same events. The SQLite queue stays the record of truth:

- a job is claimed (in the queue's fair order) only when a healthy worker is idle, and sent to that worker's own
  Celery queue, so Redis never holds a backlog that could jump the round robin;
- each dispatch has an attempt token (the claim's attempt number and start time, both kept in the job's row, so
  they survive a restart of the bot) and a lease that the worker's progress and heartbeats renew. A lease that lapses
  is counted as a crashed attempt and the job is queued again; whatever the old attempt still sends is dropped;
- the lease clock stops while the bot itself cannot reach Redis: silence then says nothing about the workers.

Stopping the bot leaves dispatched jobs running on their workers; the next start takes their results.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.celery_protocol import (
    EVENTS,
    KEY_TTL_SECONDS,
    RESULTS,
    RESULTS_TAKING,
    TASK_NAME,
    WORKERS,
    Outcome,
    b64,
    cancel_key,
    dispatch_key,
    make_celery,
    redact,
    worker_queue,
)
from bot.config import Config
from bot.jobqueue import Job, JobNotRunning, JobQueue, JobState
from bot.requests import DreamRequest
from bot.store import FileStore
from bot.worker import Progress, TaskSet, WorkerHooks

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often the worker registry is read when nothing else wakes the dispatcher


def token_of(job: Job) -> str:
    """The attempt token of a running job: a new claim always gives a new one."""
    return f"{job.attempts}:{job.started_at!r}"


@dataclass
class Dispatch:
    job: Job
    token: str
    worker: str | None  # None: restored after a restart, until a worker's heartbeat names it
    lease_until: float  # monotonic


class CeleryWorkers:
    """Dispatches the queue's jobs to Celery workers; the service uses it like the local worker."""

    def __init__(self, queue: JobQueue, store: FileStore, hooks: WorkerHooks, config: Config) -> None:
        self.queue = queue
        self.store = store
        self.hooks = hooks
        self.config = config
        self.broker_url = config.secrets.broker_url
        self.lease_seconds = config.worker.lease_seconds
        self.max_transfer_bytes = int(config.worker.max_transfer_mb * 2**20)
        self.redis = aioredis.Redis.from_url(self.broker_url, socket_timeout=5, socket_connect_timeout=3)
        self.celery = make_celery(self.broker_url)
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-send")  # Celery's client blocks
        self.dispatches: dict[str, Dispatch] = {}
        self.workers: dict[str, dict[str, Any]] = {}  # name -> its last heartbeat, plus "seen" (our monotonic)
        self.dream_seconds: list[float] = []
        self.wakeup = asyncio.Event()
        self.tasks = TaskSet()
        self.connected = False
        self._closing = False
        self._loops: list[asyncio.Task] = []

    # -- the face the service sees --------------------------------------------------------------------------------

    @property
    def current(self) -> Job | None:
        """The longest-running dispatched job (the service's estimates use one)."""
        running = [d.job for d in self.dispatches.values()]
        return min(running, key=lambda job: job.started_at or 0.0) if running else None

    def notify(self) -> None:
        self.wakeup.set()

    def cancel_current(self, job_id: str) -> None:
        if job_id in self.dispatches:
            self.tasks.spawn(self._mark_cancelled(job_id))

    def describe(self) -> list[dict[str, Any]]:
        """The workers heard from lately, for status and /metrics."""
        now = time.monotonic()
        rows = []
        for info in sorted(self.workers.values(), key=lambda w: w["name"]):
            rows.append(
                {
                    "name": info["name"],
                    "host": info.get("host"),
                    "pid": info.get("pid"),
                    "device": info.get("device"),
                    "state": info.get("state") if self._alive(info, now) else "lost",
                    "current_job": info.get("current_job"),
                    "jobs_done": info.get("jobs_done", 0),
                    "last_heartbeat": info.get("last_heartbeat"),
                }
            )
        return rows

    async def run(self) -> None:
        log.info("dreams go to Celery workers through %s", redact(self.broker_url))
        await self._restore()
        self._loops = [
            asyncio.create_task(self._listen(), name="celery-events"),
            asyncio.create_task(self._collect(), name="celery-results"),
        ]
        try:
            await self._dispatch_forever()
        finally:
            for task in self._loops:
                task.cancel()

    async def close(self, timeout: float = 30.0) -> None:
        """Stop dispatching. Dreams on workers go on; their results wait in Redis for the next start."""
        # A flag as well as cancel(): in Python 3.11 a cancel that meets a timeout inside redis's client can be
        # swallowed, and a loop that never sees it would keep the service from closing.
        self._closing = True
        self.wakeup.set()
        for task in self._loops:
            task.cancel()
        if self._loops:
            await asyncio.wait(self._loops, timeout=timeout)
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        self._sender.shutdown(wait=False, cancel_futures=True)

    # -- dispatching -----------------------------------------------------------------------------------------------

    async def _restore(self) -> None:
        """Jobs left running by the last start are still being dreamed, perhaps: each gets a fresh lease."""
        deadline = time.monotonic() + self.lease_seconds
        for job in await self.queue.all_jobs([JobState.RUNNING], limit=10_000):
            self.dispatches[job.id] = Dispatch(job, token_of(job), None, deadline)
        if self.dispatches:
            log.info("%d dispatched dreams carried over from the last start", len(self.dispatches))

    async def _dispatch_forever(self) -> None:
        while not self._closing:
            self.wakeup.clear()
            try:
                await self._read_registry()
            except (RedisError, OSError) as error:
                self._disconnected(error)
            else:
                try:
                    self._expire_leases()
                    for name in self._free_workers():
                        if self._closing:
                            break
                        job = await self.queue.claim()
                        if job is None:
                            break
                        await self._dispatch(job, name)
                except Exception:  # a bug must not stop all dreaming: log it and look again shortly
                    log.exception("the Celery dispatcher hit an error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=POLL_SECONDS)

    async def _read_registry(self) -> None:
        entries = await self.redis.hgetall(WORKERS)
        self._connected()
        for name in set(self.workers) - {key.decode() for key in entries}:
            del self.workers[name]  # stopped cleanly (or Redis restarted empty: its next heartbeat brings it back)
        for raw in entries.values():
            self._heard(json.loads(raw))

    def _heard(self, info: dict[str, Any]) -> None:
        """A heartbeat (from the registry or an event): note when, by our clock, and renew its job's lease."""
        known = self.workers.get(info["name"])
        now = time.monotonic()
        if known is None or known.get("beat") != info.get("beat") or known.get("pid") != info.get("pid"):
            info["seen"] = now
            self.workers[info["name"]] = info
            dispatch = self.dispatches.get(info.get("current_job") or "")
            if dispatch is not None and dispatch.token == info.get("token"):
                dispatch.worker = info["name"]
                dispatch.lease_until = now + self.lease_seconds
            if known is None or known.get("current_job") != info.get("current_job"):
                self.wakeup.set()  # a worker came or went idle: a slot may be free

    def _alive(self, info: dict[str, Any], now: float) -> bool:
        return now - info.get("seen", 0.0) < max(self.lease_seconds, 3 * info.get("heartbeat_seconds", 5.0))

    def _free_workers(self) -> list[str]:
        """Idle workers with nothing dispatched to them; broken ones only when no healthy one is there at all
        (their dreams then fail after the attempt limit, with the reason, instead of waiting forever)."""
        now = time.monotonic()
        alive = [info for info in self.workers.values() if self._alive(info, now)]
        for info in list(self.workers.values()):
            if now - info.get("seen", 0.0) > 10 * self.lease_seconds:
                del self.workers[info["name"]]  # long gone: forget it
        if any(info.get("state") == "ready" for info in alive):
            alive = [info for info in alive if info.get("state") == "ready"]
        else:
            alive = [info for info in alive if info.get("state") == "broken"]
        busy = {d.worker for d in self.dispatches.values()}
        return sorted(
            (info["name"] for info in alive if info["name"] not in busy and not info.get("current_job")),
            key=lambda name: self.workers[name].get("jobs_done", 0),  # spread the work
        )

    async def _dispatch(self, job: Job, name: str) -> None:
        token = token_of(job)
        request = DreamRequest.from_json(job.payload)
        image = None
        if request.image_key:
            try:
                data = await asyncio.get_running_loop().run_in_executor(None, self.store.get, request.image_key)
            except OSError:
                failed = await self.queue.fail(job.id, "The photo for this dream is no longer stored; send it again.")
                await self.hooks.on_change(failed)
                return
            if len(data) > self.max_transfer_bytes:
                failed = await self.queue.fail(
                    job.id,
                    "This picture is too large to send to a dreaming worker; try a smaller one "
                    "(or raise worker.max_transfer_mb).",
                )
                await self.hooks.on_change(failed)
                return
            image = b64(data)
        self.dispatches[job.id] = Dispatch(job, token, name, time.monotonic() + self.lease_seconds)
        await self.hooks.on_change(job)
        args = [
            job.id,
            token,
            job.payload,
            image,
            self.config.worker.time_limit_seconds,
            self.config.worker.progress_interval_seconds,
            self.max_transfer_bytes,
        ]
        try:
            await self.redis.set(dispatch_key(job.id), token, ex=KEY_TTL_SECONDS)
            await asyncio.get_running_loop().run_in_executor(self._sender, self._send, args, name)
        except Exception as error:  # Redis went away between the registry read and now: not the job's fault
            log.warning("could not send job %s to worker %s (%s); it waits for the next try", job.id, name, error)
            self.dispatches.pop(job.id, None)
            released = await self.queue.release(job.id)
            await self.hooks.on_change(released)

    def _send(self, args: list[Any], name: str) -> None:
        self.celery.send_task(TASK_NAME, args=args, queue=worker_queue(name), retry=False)
        log.debug("job %s sent to worker %s", args[0], name)

    def _expire_leases(self) -> None:
        now = time.monotonic()
        for job_id, dispatch in list(self.dispatches.items()):
            if now > dispatch.lease_until:
                del self.dispatches[job_id]
                self.tasks.spawn(self._lapsed(dispatch))

    async def _lapsed(self, dispatch: Dispatch) -> None:
        who = f"worker {dispatch.worker}" if dispatch.worker else "the worker dreaming it"
        log.warning("job %s: %s stopped answering; it goes back to the queue", dispatch.job.id, who)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(dispatch_key(dispatch.job.id))  # a late redelivery is then skipped
        try:
            job = await self.queue.retry(dispatch.job.id, f"{who} stopped answering")
        except JobNotRunning:
            return  # finished meanwhile (cancelled from the command line)
        await self.hooks.on_change(job)
        self.wakeup.set()

    def _connected(self) -> None:
        if not self.connected:
            self.connected = True
            # Whatever silence the outage caused says nothing about the workers: every lease starts afresh.
            deadline = time.monotonic() + self.lease_seconds
            for dispatch in self.dispatches.values():
                dispatch.lease_until = max(dispatch.lease_until, deadline)
            log.info("connected to Redis at %s", redact(self.broker_url))

    def _disconnected(self, error: BaseException) -> None:
        if self.connected:
            log.warning("lost Redis at %s (%s); retrying", redact(self.broker_url), type(error).__name__)
        self.connected = False
        deadline = time.monotonic() + self.lease_seconds
        for dispatch in self.dispatches.values():  # the lease clock stops while we cannot hear
            dispatch.lease_until = max(dispatch.lease_until, deadline)

    async def _mark_cancelled(self, job_id: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.set(cancel_key(job_id), "1", ex=KEY_TTL_SECONDS)

    # -- what comes back -------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Progress and heartbeats from the workers, over pub/sub; reconnects on its own."""
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS)
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        try:
                            self._event(json.loads(message["data"]))
                        except (ValueError, KeyError, TypeError):  # not one of ours: ignored
                            log.debug("ignored an event on %s", EVENTS, exc_info=True)
            except (RedisError, OSError) as error:
                self._disconnected(error)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "heartbeat":
            self._heard(event["worker"])
            return
        dispatch = self.dispatches.get(event.get("job", ""))
        if dispatch is None or dispatch.token != event.get("token"):
            return  # progress of an attempt that is no longer the job's: dropped
        dispatch.lease_until = time.monotonic() + self.lease_seconds
        dispatch.worker = event.get("worker") or dispatch.worker
        preview = _unb64(event.get("preview"))
        progress = Progress(dispatch.job.id, float(event.get("fraction", 0.0)), str(event.get("text", "")), preview)
        self.hooks.on_progress(progress)
        self.tasks.spawn(self._save_progress(progress))

    async def _save_progress(self, progress: Progress) -> None:
        try:
            if await self.queue.set_progress(progress.job_id, progress.fraction, progress.text):
                await self._mark_cancelled(progress.job_id)  # e.g. `dreambot cancel` from another process
        except Exception:  # progress is best effort
            log.debug("could not store progress of %s", progress.job_id, exc_info=True)

    async def _collect(self) -> None:
        """Outcomes, one at a time: moved aside while stored, removed once stored, so none is lost to a crash."""
        first = True
        while not self._closing:
            try:
                if first:  # what a crash of the last start left half-taken
                    for raw in await self.redis.lrange(RESULTS_TAKING, 0, -1):
                        await self._take(raw)
                    first = False
                raw = await self.redis.blmove(RESULTS, RESULTS_TAKING, 1.0, "LEFT", "RIGHT")
                if raw is not None:
                    await self._take(raw)
            except (RedisError, OSError) as error:
                self._disconnected(error)
                await asyncio.sleep(0.5)

    async def _take(self, raw: bytes) -> None:
        try:
            await self._store(Outcome.from_json(raw))
        except (RedisError, OSError):
            raise
        except Exception:
            log.exception("could not take a worker's result; it is dropped")
        await self.redis.lrem(RESULTS_TAKING, 1, raw)

    async def _store(self, outcome: Outcome) -> None:
        log.debug("job %s: %s from worker %s", outcome.job_id, outcome.kind, outcome.worker)
        worker = self.workers.get(outcome.worker)
        if worker is not None and worker.get("current_job") == outcome.job_id:
            worker["current_job"] = None  # idle now (its heartbeat says so too, in the same transaction)
        try:
            job = await self.queue.get(outcome.job_id)
        except Exception:
            return  # removed meanwhile
        if job.state is not JobState.RUNNING or token_of(job) != outcome.token:
            log.info("dropped a stale result for job %s from worker %s", outcome.job_id, outcome.worker)
            self.wakeup.set()
            return
        self.dispatches.pop(job.id, None)
        self.wakeup.set()  # only now: the dispatcher must find the worker free when it looks
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(dispatch_key(job.id))
        try:
            finished = await self._record(job, outcome)
        except JobNotRunning as error:  # finished from another process in the last instant
            finished = error.job
        await self.hooks.on_change(finished)

    async def _record(self, job: Job, outcome: Outcome) -> Job:
        if job.cancel_requested:
            return await self.queue.mark_cancelled(job.id)  # a result for a cancelled job is dropped
        if outcome.kind == "done":
            data = outcome.data_bytes()
            if len(data) > self.max_transfer_bytes:
                return await self.queue.fail(job.id, "The result was too large to bring back from the worker.")
            key = await asyncio.get_running_loop().run_in_executor(None, self.store.put, data, outcome.extension)
            self.dream_seconds.append(outcome.seconds)
            result = {
                "key": key,
                "width": outcome.width,
                "height": outcome.height,
                "caption": outcome.caption,
                "settings": outcome.settings or {},
                "seconds": round(outcome.seconds, 2),
            }
            return await self.queue.finish(job.id, json.dumps(result))
        if outcome.kind == "failed":
            return await self.queue.fail(job.id, outcome.error)
        return await self.queue.retry(job.id, outcome.error)


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None
