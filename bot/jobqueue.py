"""A persistent, fair job queue in one SQLite file.

The queue knows nothing about dreams: a job's request and result are JSON strings made by the caller. What it does
know is who asked, how urgent the request is, and whose turn it is:

- priority classes are served strictly in order (interactive, then scheduled, then bulk);
- inside a class, users take turns: the next job goes to the user served least recently in that class (users never
  served in it come first, by the age of their oldest waiting job), and each user's own jobs go first in, first out.

Turns are stored in the file, so fairness survives restarts, and a second process (the ``dreambot`` command line)
can read and change the same file while the service runs.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

__all__ = [
    "FINISHED_STATES",
    "Job",
    "JobNotCancellable",
    "JobNotFound",
    "JobNotRunning",
    "JobQueue",
    "JobState",
    "PermissionDenied",
    "Priority",
    "QueueError",
    "QueueLimits",
    "QueueRefused",
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class Priority(IntEnum):
    """Request classes, served in this order."""

    INTERACTIVE = 0
    SCHEDULED = 1
    BULK = 2


@dataclass(frozen=True)
class Job:
    id: str
    user: str
    priority: Priority
    state: JobState
    payload: str
    fingerprint: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: float
    progress_text: str
    result: str | None
    error: str | None
    cancel_requested: bool
    cached: bool

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class QueueLimits:
    per_user: int = 5
    cooldown_seconds: float = 0.0
    global_cap: int = 500
    max_attempts: int = 3
    seconds_per_job: float = 30.0


class QueueError(Exception):
    """Base of the queue's errors; ``message`` is a sentence that can be shown to the person who asked."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class JobNotFound(QueueError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__("I can't find a dream with that id; check the id and try again.")
        self.job_id = job_id


class PermissionDenied(QueueError):
    pass


class JobNotCancellable(QueueError):
    pass


class JobNotRunning(QueueError):
    """A worker tried to report on a job that is not running (a bug, or the job was changed behind its back)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"That dream is {job.state.value}, not running, so it can't be updated.")
        self.job = job


class QueueRefused(QueueError):
    def __init__(self, reason: str, retry_after: float, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order; AUTOINCREMENT so numbers are never reused
    id TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    fingerprint TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress REAL NOT NULL DEFAULT 0,
    progress_text TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, priority, user, seq);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user, seq);
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (state, finished_at);
CREATE INDEX IF NOT EXISTS jobs_by_fingerprint ON jobs (fingerprint, state) WHERE fingerprint IS NOT NULL;
-- Whose turn it is: the higher served_order, the more recently that user was served in that class.
CREATE TABLE IF NOT EXISTS turns (
    user TEXT NOT NULL,
    priority INTEGER NOT NULL,
    served_order INTEGER NOT NULL,
    last_served_at REAL NOT NULL,
    PRIMARY KEY (user, priority)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS turns_by_order ON turns (served_order);
CREATE TABLE IF NOT EXISTS submitters (
    user TEXT PRIMARY KEY,
    last_submit_at REAL NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

_COLUMNS = (
    "id, user, priority, state, payload, fingerprint, attempts, created_at, started_at, finished_at, progress,"
    " progress_text, result, error, cancel_requested, cached"
)
_CANCELLED = "Cancelled."
_AVERAGE_OVER = 20  # finished jobs the duration estimate looks at
_BUSY_TIMEOUT_MS = 5000  # how long to wait for the other process's write to finish


def _job(row: sqlite3.Row | Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        user=row[1],
        priority=Priority(row[2]),
        state=JobState(row[3]),
        payload=row[4],
        fingerprint=row[5],
        attempts=row[6],
        created_at=row[7],
        started_at=row[8],
        finished_at=row[9],
        progress=row[10],
        progress_text=row[11],
        result=row[12],
        error=row[13],
        cancel_requested=bool(row[14]),
        cached=bool(row[15]),
    )


def _turn_key(served_order: int | None, first_seq: int) -> tuple[int, int]:
    """Sort key deciding whose turn it is; claim() and position() both use it so they always agree."""
    # Never served sorts as 0, before every served user; ties (only among the never-served) go to the oldest job.
    return (served_order or 0, first_seq)


def _fair_order(rows: Iterable[tuple[str, str, int]], turns: dict[str, int]) -> list[str]:
    """Job ids of one priority class in the order claim() will hand them out, if nothing new arrives.

    ``rows`` are (job id, user, seq) of the queued jobs, ``turns`` maps user -> served_order for this class.
    """
    per_user: dict[str, list[tuple[int, str]]] = {}
    for job_id, user, seq in rows:
        per_user.setdefault(user, []).append((seq, job_id))
    heap: list[tuple[tuple[int, int], str]] = []
    for user, jobs in per_user.items():
        jobs.sort(reverse=True)  # pop() from the end gives the oldest
        heap.append((_turn_key(turns.get(user), jobs[-1][0]), user))
    heapq.heapify(heap)
    next_order = max(turns.values(), default=0) + 1
    order: list[str] = []
    while heap:
        _, user = heapq.heappop(heap)
        jobs = per_user[user]
        order.append(jobs.pop()[1])
        if jobs:
            heapq.heappush(heap, (_turn_key(next_order, jobs[-1][0]), user))
            next_order += 1
    return order


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _about(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes <= 1:
        return "about a minute"
    if minutes < 120:
        return f"about {minutes} minutes"
    return f"about {round(minutes / 60)} hours"


class JobQueue:
    """The queue over one SQLite file. Open it with ``await JobQueue.open(path)`` and close it when done.

    One instance may be shared by any number of tasks of one event loop (its operations take turns); other processes
    may open the same file at the same time.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, limits: QueueLimits, clock: Callable[[], float]) -> None:
        self._db = db
        self.path = path
        self.limits = limits
        self._clock = clock
        # One connection is one transaction at a time: tasks must not interleave statements inside another's.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: str | Path,
        limits: QueueLimits = QueueLimits(),  # frozen, so sharing the default is safe
        *,
        clock: Callable[[], float] = time.time,
    ) -> JobQueue:
        path = Path(path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a read-then-write is atomic across processes.
        db = await aiosqlite.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            await db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is safe with WAL (a power cut may lose the last commits, never corrupts) and saves an fsync a job.
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except BaseException:
            await db.close()
            raise
        return cls(db, path, limits, clock)

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._db

    async def _fetch(self, db: aiosqlite.Connection, job_id: str) -> Job:
        rows = await db.execute_fetchall(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return _job(next(iter(rows)))

    async def _update(self, db: aiosqlite.Connection, job_id: str, sets: str, params: Sequence[Any]) -> Job:
        rows = await db.execute_fetchall(f"UPDATE jobs SET {sets} WHERE id = ? RETURNING {_COLUMNS}", (*params, job_id))
        return _job(next(iter(rows)))

    async def _running(self, db: aiosqlite.Connection, job_id: str) -> Job:
        job = await self._fetch(db, job_id)
        if job.state is not JobState.RUNNING:
            raise JobNotRunning(job)
        return job

    async def _average(self, db: aiosqlite.Connection) -> float:
        rows = await db.execute_fetchall(
            "SELECT AVG(finished_at - started_at), COUNT(*) FROM (SELECT finished_at, started_at FROM jobs"
            " WHERE state = 'done' AND cached = 0 AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
            (_AVERAGE_OVER,),
        )
        average, count = next(iter(rows))
        return float(average) if count else self.limits.seconds_per_job

    async def _class_order(self, db: aiosqlite.Connection, priority: int) -> list[str]:
        rows = await db.execute_fetchall(
            "SELECT id, user, seq FROM jobs WHERE state = 'queued' AND priority = ?", (priority,)
        )
        turns = await db.execute_fetchall("SELECT user, served_order FROM turns WHERE priority = ?", (priority,))
        return _fair_order(rows, dict(turns))

    async def _position(self, db: aiosqlite.Connection, job: Job) -> int | None:
        if job.state is not JobState.QUEUED:
            return None
        rows = await db.execute_fetchall(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND priority < ?", (int(job.priority),)
        )
        ahead = next(iter(rows))[0]
        return ahead + (await self._class_order(db, job.priority)).index(job.id)

    # -- submitting -------------------------------------------------------------------------------------------------

    async def submit(
        self,
        payload: str,
        *,
        user: str,
        priority: Priority = Priority.INTERACTIVE,
        fingerprint: str | None = None,
        exempt: bool = False,
    ) -> Job:
        """Queue a request, or answer it at once from an earlier identical one.

        Raises QueueRefused when the user has too many dreams waiting, asks again too soon, or the queue is full.
        ``exempt`` (admins, the scheduler) skips the per-user limit and the cooldown, and does not start a cooldown;
        scheduled jobs are never refused for a full queue.
        """
        priority = Priority(priority)
        now = self._clock()
        limits = self.limits
        async with self._write() as db:
            if fingerprint is not None:
                cached = await self._answer_from_cache(db, payload, user, priority, fingerprint, now)
                if cached is not None:
                    if not exempt:
                        await self._note_submission(db, user, now)
                    return cached
            rows = await db.execute_fetchall(
                "SELECT"
                " (SELECT COUNT(*) FROM jobs WHERE user = :user AND state IN ('queued', 'running')),"
                " (SELECT last_submit_at FROM submitters WHERE user = :user),"
                " (SELECT COUNT(*) FROM jobs WHERE state = 'queued')",
                {"user": user},
            )
            mine, last_submit, queued = next(iter(rows))
            if not exempt:
                if mine >= limits.per_user:
                    raise QueueRefused(
                        "user_limit",
                        await self._time_until_one_finishes(db, user),
                        f"You already have {_plural(mine, 'dream')} waiting; wait for one to finish or cancel one.",
                    )
                elapsed = now - last_submit if last_submit is not None else math.inf
                # A clock set back (elapsed < 0) must not lock people out until it catches up.
                if 0 <= elapsed < limits.cooldown_seconds:
                    wait = limits.cooldown_seconds - elapsed
                    raise QueueRefused(
                        "cooldown",
                        wait,
                        f"Slow down a little: you can ask again in {_plural(max(1, math.ceil(wait)), 'second')}.",
                    )
            if queued >= limits.global_cap and priority is not Priority.SCHEDULED:
                # Ask people back once a tenth of the queue has been served, so a retry is likely to get in.
                jobs_to_wait = queued - limits.global_cap + max(1, limits.global_cap // 10)
                wait = max(1.0, jobs_to_wait * await self._average(db))
                raise QueueRefused(
                    "queue_full", wait, f"The queue is full right now; please try again in {_about(wait)}."
                )
            job = await self._insert(
                db,
                "INSERT INTO jobs (id, user, priority, state, payload, fingerprint, created_at)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (user, int(priority), payload, fingerprint, now),
            )
            if not exempt:
                await self._note_submission(db, user, now)
            return job

    async def _insert(self, db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> Job:
        while True:
            try:
                rows = await db.execute_fetchall(f"{sql} RETURNING {_COLUMNS}", (secrets.token_urlsafe(9), *params))
            except sqlite3.IntegrityError:  # an id collision: 72 random bits make this all but impossible
                continue
            return _job(next(iter(rows)))

    async def _answer_from_cache(
        self, db: aiosqlite.Connection, payload: str, user: str, priority: Priority, fingerprint: str, now: float
    ) -> Job | None:
        rows = await db.execute_fetchall(
            "SELECT result FROM jobs WHERE fingerprint = ? AND state = 'done' ORDER BY seq DESC LIMIT 1",
            (fingerprint,),
        )
        found = next(iter(rows), None)
        if found is None:
            return None
        return await self._insert(
            db,
            "INSERT INTO jobs (id, user, priority, state, payload, fingerprint, created_at, started_at, finished_at,"
            " progress, result, cached) VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, 1, ?, 1)",
            (user, int(priority), payload, fingerprint, now, now, now, found[0]),
        )

    async def _note_submission(self, db: aiosqlite.Connection, user: str, now: float) -> None:
        await db.execute(
            "INSERT INTO submitters (user, last_submit_at) VALUES (?, ?)"
            " ON CONFLICT (user) DO UPDATE SET last_submit_at = excluded.last_submit_at",
            (user, now),
        )

    async def _time_until_one_finishes(self, db: aiosqlite.Connection, user: str) -> float:
        average = await self._average(db)
        rows = await db.execute_fetchall(
            f"SELECT {_COLUMNS} FROM jobs WHERE user = ? AND state IN ('queued', 'running')", (user,)
        )
        jobs = [_job(row) for row in rows]
        if any(job.state is JobState.RUNNING for job in jobs):
            return average
        positions = [await self._position(db, job) for job in jobs]
        return (min((p for p in positions if p is not None), default=0) + 1) * average

    # -- the worker's side ------------------------------------------------------------------------------------------

    async def claim(self) -> Job | None:
        """Take the next job in fair order and mark it running, or return None when nothing is queued."""
        now = self._clock()
        async with self._write() as db:
            rows = await db.execute_fetchall("SELECT MIN(priority) FROM jobs WHERE state = 'queued'")
            priority = next(iter(rows))[0]
            if priority is None:
                return None
            candidates = await db.execute_fetchall(
                "SELECT j.user, MIN(j.seq), t.served_order FROM jobs AS j"
                " LEFT JOIN turns AS t ON t.user = j.user AND t.priority = j.priority"
                " WHERE j.state = 'queued' AND j.priority = ? GROUP BY j.user",
                (priority,),
            )
            user, seq, _ = min(candidates, key=lambda c: _turn_key(c[2], c[1]))
            rows = await db.execute_fetchall(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, progress = 0,"
                f" progress_text = '' WHERE seq = ? RETURNING {_COLUMNS}",
                (now, seq),
            )
            await db.execute(
                "INSERT INTO turns (user, priority, served_order, last_served_at)"
                " VALUES (?, ?, (SELECT COALESCE(MAX(served_order), 0) + 1 FROM turns), ?)"
                " ON CONFLICT (user, priority) DO UPDATE"
                " SET served_order = excluded.served_order, last_served_at = excluded.last_served_at",
                (user, priority, now),
            )
            return _job(next(iter(rows)))

    async def set_progress(self, job_id: str, fraction: float, text: str = "") -> bool:
        """Store a running job's progress; True means stop working on it (cancelled, or no longer running)."""
        fraction = min(1.0, max(0.0, fraction))
        async with self._write() as db:
            rows = await db.execute_fetchall(
                "UPDATE jobs SET progress = ?, progress_text = ? WHERE id = ? AND state = 'running'"
                " RETURNING cancel_requested",
                (fraction, text, job_id),
            )
            found = next(iter(rows), None)
            if found is not None:
                return bool(found[0])
            await self._fetch(db, job_id)  # raises JobNotFound for an unknown id
            return True

    async def finish(self, job_id: str, result: str) -> Job:
        async with self._write() as db:
            await self._running(db, job_id)
            return await self._update(
                db,
                job_id,
                "state = 'done', result = ?, finished_at = ?, progress = 1",
                (result, self._clock()),
            )

    async def fail(self, job_id: str, error: str) -> Job:
        async with self._write() as db:
            await self._running(db, job_id)
            return await self._update(
                db, job_id, "state = 'failed', error = ?, finished_at = ?", (error, self._clock())
            )

    async def retry(self, job_id: str, error: str) -> Job:
        """Put a job that crashed back in the queue, or fail it for good once it has used up its attempts."""
        async with self._write() as db:
            job = await self._running(db, job_id)
            if job.cancel_requested:
                return await self._set_cancelled(db, job_id)
            if job.attempts >= self.limits.max_attempts:
                message = (
                    f"This request failed {job.attempts} times ({error}); it has been dropped."
                    " Try another image or settings."
                )
                return await self._update(
                    db, job_id, "state = 'failed', error = ?, finished_at = ?", (message, self._clock())
                )
            return await self._requeue(db, job_id)

    async def mark_cancelled(self, job_id: str) -> Job:
        """The worker stopped a job whose cancellation was requested."""
        async with self._write() as db:
            job = await self._fetch(db, job_id)
            if job.state is JobState.CANCELLED:
                return job
            if job.state is not JobState.RUNNING:
                raise JobNotRunning(job)
            return await self._set_cancelled(db, job_id)

    async def _set_cancelled(self, db: aiosqlite.Connection, job_id: str) -> Job:
        return await self._update(
            db, job_id, "state = 'cancelled', error = ?, finished_at = ?", (_CANCELLED, self._clock())
        )

    async def _requeue(self, db: aiosqlite.Connection, job_id: str) -> Job:
        # The job keeps its seq, so it goes back to the front of its owner's line rather than the back.
        return await self._update(
            db, job_id, "state = 'queued', started_at = NULL, progress = 0, progress_text = ''", ()
        )

    async def recover(self) -> list[Job]:
        """At start-up, deal with the jobs a dead service left running; returns every job it changed.

        Call it only from the service, before its workers start: it assumes nothing is running anywhere.
        """
        async with self._write() as db:
            rows = await db.execute_fetchall(f"SELECT {_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY seq")
            touched = []
            for job in map(_job, rows):
                if job.cancel_requested:
                    touched.append(await self._set_cancelled(db, job.id))
                elif job.attempts >= self.limits.max_attempts:
                    message = f"This request stopped the dreaming worker {job.attempts} times and has been dropped."
                    touched.append(
                        await self._update(
                            db, job.id, "state = 'failed', error = ?, finished_at = ?", (message, self._clock())
                        )
                    )
                else:
                    touched.append(await self._requeue(db, job.id))
            return touched

    # -- the owner's side -------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str, *, by_user: str | None = None, admin: bool = False) -> Job:
        """Cancel a waiting job at once, or ask the worker to stop a running one.

        ``by_user`` is who asks; None means the operator at the command line, who may cancel anything.
        """
        async with self._write() as db:
            job = await self._fetch(db, job_id)
            if by_user is not None and not admin and by_user != job.user:
                raise PermissionDenied("Only the person who asked (or an admin) can cancel that dream.")
            if job.finished:
                raise JobNotCancellable("That dream has already finished.")
            if job.state is JobState.QUEUED:
                return await self._set_cancelled(db, job_id)
            return await self._update(db, job_id, "cancel_requested = 1", ())

    async def get(self, job_id: str) -> Job:
        async with self._read() as db:
            return await self._fetch(db, job_id)

    async def position(self, job_id: str) -> int | None:
        """How many jobs will be served before this one (0: it is next), or None if it is not waiting."""
        async with self._read() as db:
            return await self._position(db, await self._fetch(db, job_id))

    async def estimate(self, job_id: str) -> float | None:
        """Seconds until the job starts, or None if it is not waiting."""
        async with self._read() as db:
            position = await self._position(db, await self._fetch(db, job_id))
            return None if position is None else position * await self._average(db)

    async def average_seconds(self) -> float:
        """Mean duration of the last finished dreams (answers from the cache excluded)."""
        async with self._read() as db:
            return await self._average(db)

    # -- listings ---------------------------------------------------------------------------------------------------

    async def counts(self) -> dict[JobState, int]:
        async with self._read() as db:
            rows = await db.execute_fetchall("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        counts = dict.fromkeys(JobState, 0)
        counts.update((JobState(state), n) for state, n in rows)
        return counts

    async def _list(
        self, where: str, params: Sequence[Any], states: Iterable[JobState] | None, limit: int
    ) -> list[Job]:
        clauses, params = ([where] if where else []), list(params)
        if states is not None:
            wanted = [JobState(s).value for s in states]
            clauses.append(f"state IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            params += wanted
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        async with self._read() as db:
            rows = await db.execute_fetchall(f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [_job(row) for row in rows]

    async def jobs_of(self, user: str, states: Iterable[JobState] | None = None, limit: int = 50) -> list[Job]:
        """One user's jobs, newest first."""
        return await self._list("user = ?", (user,), states, limit)

    async def all_jobs(self, states: Iterable[JobState] | None = None, limit: int = 200) -> list[Job]:
        """Everyone's jobs, newest first."""
        return await self._list("", (), states, limit)

    async def recent(
        self, state: JobState = JobState.DONE, limit: int = 24, *, include_cached: bool = False
    ) -> list[Job]:
        """The latest jobs in one state, most recently finished first; answers from the cache are left out unless
        asked for, so a gallery does not show one picture twice."""
        where = "state = ?" if include_cached else "state = ? AND cached = 0"
        async with self._read() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY COALESCE(finished_at, created_at) DESC, seq DESC"
                " LIMIT ?",
                (JobState(state).value, limit),
            )
        return [_job(row) for row in rows]

    async def delete_finished_before(self, timestamp: float) -> list[Job]:
        """Remove finished jobs older than ``timestamp`` and return them so the caller can delete their files.

        Delete files only for returned jobs with ``cached`` False: a cached answer shares its original's files. An
        original is kept while a newer cached answer still points at its result.
        """
        async with self._write() as db:
            rows = await db.execute_fetchall(
                "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < :ts"
                " AND NOT (state = 'done' AND cached = 0 AND fingerprint IS NOT NULL AND EXISTS ("
                "   SELECT 1 FROM jobs AS copy WHERE copy.fingerprint = jobs.fingerprint AND copy.state = 'done'"
                "   AND copy.cached = 1 AND copy.result = jobs.result AND copy.finished_at >= :ts))"
                f" RETURNING {_COLUMNS}",
                {"ts": timestamp},
            )
        return [_job(row) for row in rows]
