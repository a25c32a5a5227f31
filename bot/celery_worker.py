"""`dreambot worker`: one Celery worker process per device that loads the networks once and dreams what the bot sends.

A worker needs only an outbound connection to Redis; it never sees the bot's database or files. The photo comes in
the task, the result goes back on ``dreambot:results`` (see bot/celery_protocol.py), and progress and heartbeats go
out on ``dreambot:events``. The solo pool runs each task in this very process, so CUDA is set up once, here, and
never inherited by a forked child.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from bot.celery_protocol import (
    EVENTS,
    RESULTS,
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
from bot.engine import Engine
from bot.media import MediaError
from bot.options import OptionError
from bot.requests import DreamRequest
from bot.worker import _preview_jpeg, duration
from dreamcore.errors import Cancelled, DreamError
from dreamcore.images import load_image

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.5  # how often a dream asks Redis whether its owner cancelled it
DELIVERY_PATIENCE_SECONDS = 600.0  # how long a finished result waits for Redis to come back before it is given up


class DreamWorker:
    """The worker's state and its one job at a time; the Celery task calls :meth:`dream`."""

    def __init__(
        self, broker_url: str, name: str, device: str, engine: Engine, *, heartbeat_seconds: float = 5.0
    ) -> None:
        self.redis = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=3)
        self.name = name
        self.device = device
        self.engine = engine
        self.heartbeat_seconds = heartbeat_seconds
        self.host = socket.gethostname()
        self.state = "loading"  # loading, ready, broken (the network could not be loaded)
        self.error = ""
        self.current: tuple[str, str] | None = None  # (job id, token) being dreamed
        self.jobs_done = 0
        self.beats = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    # -- life ------------------------------------------------------------------------------------------------------

    def load(self) -> bool:
        """Load the networks; a failure leaves the worker up but marked broken, so the bot sends it nothing while
        a healthy worker exists (and each task tries again, in case the device came back)."""
        try:
            self.engine.warm_up()
        except Exception as error:
            self.state, self.error = "broken", f"{type(error).__name__}: {error}"
            log.error("worker %s could not load its network: %s", self.name, self.error)
        else:
            self.state, self.error = "ready", ""
        self.beat()
        return self.state == "ready"

    def info(self) -> dict[str, Any]:
        job, token = self.current or (None, None)
        return {
            "name": self.name,
            "host": self.host,
            "pid": os.getpid(),
            "device": self.device,
            "state": self.state,
            "error": self.error,
            "current_job": job,
            "token": token,
            "jobs_done": self.jobs_done,
            "last_heartbeat": time.time(),
            "beat": self.beats,  # the bot times heartbeats by its own clock when this changes: no clock skew
            "heartbeat_seconds": self.heartbeat_seconds,
        }

    def beat(self, pipe: Any = None) -> None:
        """Tell the bot we are alive (and what we dream): the registry for status, an event for the leases."""
        with self._lock:
            self.beats += 1
            text = json.dumps(self.info())
        own = pipe is None
        pipe = self.redis.pipeline() if own else pipe
        pipe.hset(WORKERS, self.name, text)
        pipe.publish(EVENTS, json.dumps({"type": "heartbeat", "worker": json.loads(text)}))
        if own:
            try:
                pipe.execute()
            except redis.RedisError:  # Redis is away; the next beat tries again
                log.debug("heartbeat of %s not sent", self.name, exc_info=True)

    def heartbeat_forever(self) -> threading.Thread:
        def run() -> None:
            while not self._stopped.wait(self.heartbeat_seconds):
                self.beat()

        thread = threading.Thread(target=run, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(redis.RedisError):
            self.redis.hdel(WORKERS, self.name)  # a clean stop leaves at once rather than fading out

    # -- one dream -------------------------------------------------------------------------------------------------

    def dream(
        self,
        job_id: str,
        token: str,
        payload: str,
        image: str | None,
        time_limit: float,
        progress_interval: float,
        max_bytes: int | None = None,
    ) -> str:
        """Dream one dispatch and push its outcome; returns the outcome's kind (or "skipped")."""
        wanted = self.redis.get(dispatch_key(job_id))
        if wanted is None or wanted.decode() != token:
            # A redelivery of a dispatch the bot has since given to someone else, or cancelled: nothing to do.
            log.info("skipping job %s: the bot no longer wants attempt %s", job_id, token)
            return "skipped"
        if self.state != "ready" and not self.load():
            outcome = Outcome(
                job_id, token, self.name, "retry", error=f"worker {self.name} could not load its network: {self.error}"
            )
            self._deliver(outcome)
            return outcome.kind
        self.current = (job_id, token)
        self.beat()
        started = time.monotonic()
        try:
            outcome = self._render(job_id, token, payload, image, time_limit, progress_interval)
        finally:
            self.current = None
        outcome = _with_seconds(outcome, time.monotonic() - started)
        if max_bytes is not None and outcome.kind == "done" and len(outcome.data) * 3 // 4 > max_bytes:
            # Never push a result into Redis that the bot would refuse: say so instead.
            outcome = Outcome(
                job_id,
                token,
                self.name,
                "failed",
                error="The result is larger than worker.max_transfer_mb allows; ask for a smaller picture.",
            )
        self.jobs_done += 1
        self._deliver(outcome)
        return outcome.kind

    def _render(
        self, job_id: str, token: str, payload: str, image: str | None, time_limit: float, progress_interval: float
    ) -> Outcome:
        deadline = time.monotonic() + time_limit
        checked = [0.0, False]  # when the cancel mark was last looked at, and whether it was there

        def cancelled() -> bool:
            now = time.monotonic()
            if not checked[1] and now - checked[0] >= CANCEL_CHECK_SECONDS:
                checked[0] = now
                with contextlib.suppress(redis.RedisError):  # Redis away: keep dreaming, the result waits
                    checked[1] = bool(self.redis.exists(cancel_key(job_id)))
            return checked[1]

        def should_stop() -> bool:
            return cancelled() or time.monotonic() > deadline

        last_sent = [0.0]

        def report(fraction: float, text: str, step_image: Any) -> None:
            now = time.monotonic()
            if now - last_sent[0] < progress_interval and fraction < 1.0:
                return
            last_sent[0] = now
            preview = b64(_preview_jpeg(step_image)) if step_image is not None else None
            event = {"type": "progress", "job": job_id, "token": token, "worker": self.name}
            event |= {"fraction": fraction, "text": text, "preview": preview}
            try:
                self.redis.publish(EVENTS, json.dumps(event))
            except redis.RedisError:
                log.debug("progress of %s not sent", job_id, exc_info=True)

        try:
            request = DreamRequest.from_json(payload)
            loaded = load_image(base64.b64decode(image)) if image else None
            rendered = self.engine.render(request.command, loaded, report, should_stop)
        except Cancelled:
            if checked[1]:
                return Outcome(job_id, token, self.name, "cancelled")
            return Outcome(
                job_id,
                token,
                self.name,
                "failed",
                error=f"This dream took longer than {duration(time_limit)} and was stopped; "
                "try fewer octaves, fewer steps or a smaller picture.",
            )
        except (DreamError, OptionError, MediaError) as error:
            return Outcome(job_id, token, self.name, "failed", error=str(error))  # the request itself is wrong
        except Exception as error:
            log.exception("job %s failed in the engine", job_id)
            return Outcome(job_id, token, self.name, "retry", error=f"{type(error).__name__}: {error}")
        return Outcome(
            job_id,
            token,
            self.name,
            "done",
            data=b64(rendered.data),
            extension=rendered.extension,
            width=rendered.width,
            height=rendered.height,
            caption=rendered.caption,
            settings=rendered.settings,
        )

    def _deliver(self, outcome: Outcome) -> None:
        """Push the outcome (and our now idle heartbeat, in the same transaction); wait out a Redis outage."""
        deadline = time.monotonic() + DELIVERY_PATIENCE_SECONDS
        pause = 0.2
        while True:
            try:
                pipe = self.redis.pipeline(transaction=True)
                pipe.rpush(RESULTS, outcome.to_json())
                self.beat(pipe)
                pipe.execute()
                return
            except redis.RedisError as error:
                if time.monotonic() > deadline:
                    log.error("gave up delivering job %s after Redis stayed away: %s", outcome.job_id, error)
                    return  # the bot's lease gives the job to another worker
                log.warning("Redis is away; the result of job %s waits (%s)", outcome.job_id, type(error).__name__)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)


def _with_seconds(outcome: Outcome, seconds: float) -> Outcome:
    return Outcome(**{**outcome.__dict__, "seconds": round(seconds, 3)})


def default_name(device: str) -> str:
    """host-device, e.g. gpu1-cuda0: stable across restarts, so a worker keeps its own queue."""
    return f"{socket.gethostname()}-{device.replace(':', '')}"


def run_worker(
    broker_url: str,
    engine: Engine,
    *,
    name: str,
    device: str,
    heartbeat_seconds: float = 5.0,
    log_level: str = "info",
) -> None:
    """Load the networks, then serve this worker's queue until SIGTERM (a dream in progress finishes first)."""
    worker = DreamWorker(broker_url, name, device, engine, heartbeat_seconds=heartbeat_seconds)
    app = make_celery(broker_url)

    @app.task(name=TASK_NAME)
    def dream(
        job_id: str,
        token: str,
        payload: str,
        image: str | None,
        time_limit: float,
        progress_interval: float,
        max_bytes: int | None = None,
    ) -> str:
        return worker.dream(job_id, token, payload, image, time_limit, progress_interval, max_bytes)

    log.info("worker %s on %s: connecting to %s", name, device, redact(broker_url))
    worker.heartbeat_forever()
    worker.load()
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",  # CUDA cannot live in forked children: the dream runs in this process
                "--concurrency=1",
                "--prefetch-multiplier=1",
                f"--queues={worker_queue(name)}",
                f"--hostname={name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--loglevel={log_level.upper()}",
            ]
        )
    finally:
        worker.stop()
