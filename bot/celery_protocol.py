"""What the bot and its Celery workers agree on: the Celery app, the task's name, the Redis keys and the messages.

The bot's SQLite queue stays the record of truth. Celery only carries one dispatch at a time to one worker's own
queue (``dreambot.<worker name>``), so the broker never holds a backlog that could jump the bot's round robin. The way
back does not go through Celery's result backend but through Redis itself:

- ``dreambot:results``: a list the worker pushes each outcome onto. The bot moves an entry to
  ``dreambot:results:taking`` while it stores it and removes it afterwards, so an outcome survives a bot restart
  (and a crash halfway through is finished at the next start; storing is idempotent).
- ``dreambot:events``: a pub/sub channel for progress and heartbeats. Losing one costs nothing but a lease renewal.
- ``dreambot:workers``: a hash of each worker's last heartbeat, for ``dreambot status`` and the bot's free slots.
- ``dreambot:dispatch:<job>``: the attempt token the bot wants dreamed now; a worker skips a task whose token
  is no longer there (a redelivery after the bot gave the job to someone else).
- ``dreambot:cancel:<job>``: set when the job's owner cancels it; the worker's dream stops at its next step.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery

TASK_NAME = "dreambot.dream"
RESULTS = "dreambot:results"
RESULTS_TAKING = "dreambot:results:taking"
EVENTS = "dreambot:events"
WORKERS = "dreambot:workers"
KEY_TTL_SECONDS = 7 * 86400  # dispatch and cancel marks outlive any dream, then tidy themselves away


def dispatch_key(job_id: str) -> str:
    return f"dreambot:dispatch:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"dreambot:cancel:{job_id}"


def worker_queue(name: str) -> str:
    return f"dreambot.{name}"


def redact(url: str) -> str:
    """The broker address without its password, for messages: ``redis://:***@host:6379/0``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def make_celery(broker_url: str) -> Celery:
    """The Celery app both sides use; settings chosen for long dreams on one device per process."""
    app = Celery("dreambot", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # outcomes come back through dreambot:results, see above
        task_acks_late=True,  # a task is acknowledged when its dream is over, not when it starts
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one dream at a time per worker: nothing waits inside a worker
        worker_concurrency=1,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # keep trying while Redis is away
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # The bot's leases notice dead workers; Redis's visibility timeout would re-deliver long dreams that still
        # run (celery/celery#5935), so it is set far beyond any dream and never relied on.
        broker_transport_options={"visibility_timeout": 12 * 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_queue="dreambot.unrouted",
    )
    return app


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as a worker reports it."""

    job_id: str
    token: str
    worker: str
    kind: str  # done, failed (final: the request is wrong), retry (the worker's fault), cancelled
    error: str = ""
    data: str = ""  # base64 of the result file, when done
    extension: str = ""
    width: int = 0
    height: int = 0
    caption: str = ""
    settings: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        return cls(**json.loads(text))

    def data_bytes(self) -> bytes:
        return base64.b64decode(self.data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def read_workers(broker_url: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    """The workers' last heartbeats from Redis, for `dreambot status` (a separate process from the bot).

    A worker silent for three heartbeats is shown as "lost". Raises redis's errors when Redis cannot be reached.
    """
    import time

    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        entries = client.hgetall(WORKERS)
    finally:
        client.close()
    now = time.time()
    rows = []
    for raw in entries.values():
        info = json.loads(raw)
        silent = now - float(info.get("last_heartbeat", 0.0))
        rows.append(
            {
                "name": info["name"],
                "host": info.get("host"),
                "pid": info.get("pid"),
                "device": info.get("device"),
                "state": "lost" if silent > 3 * float(info.get("heartbeat_seconds", 5.0)) else info.get("state"),
                "current_job": info.get("current_job"),
                "jobs_done": info.get("jobs_done", 0),
                "last_heartbeat": info.get("last_heartbeat"),
            }
        )
    return sorted(rows, key=lambda row: row["name"])
