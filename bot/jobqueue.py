"""A persistent, fair job queue in one SQLite file.

The queue knows nothing about dreams: a job's request and result are JSON strings made by the caller. What it does
know is who asked, how urgent the request is, and whose turn it is:

- priority classes are served strictly in order (interactive, then scheduled, then bulk);
- inside a class, users take turns: the next job goes to the user served least recently in that class (users never
  served in it come first, by the age of their oldest waiting job), and each user's own jobs go first in, first out.

Turns are stored in the file, so fairness survives restarts, and a second process (the ``dreambot`` command line)
can read and change the same file while the service runs.

How it runs: each operation is one plain ``sqlite3`` function, run whole on the queue's own thread, so it costs one
trip between the event loop and that thread however many statements it needs. Operations called while the thread is
busy share one transaction (each in its own savepoint) and one trip back: a burst of requests costs one commit, not
one each. A small table, ``waiting``, kept exact by triggers, holds each user's number of waiting jobs and oldest
waiting job per class: claiming and positions read that, never every waiting job.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

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
-- Who is waiting in each class: a user's number of queued jobs there and the oldest of them. The triggers keep it
-- in step with jobs whoever writes (a second process included); open() rebuilds it, which also upgrades old files.
CREATE TABLE IF NOT EXISTS waiting (
    priority INTEGER NOT NULL,
    user TEXT NOT NULL,
    queued INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (priority, user)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS waiting_on_insert AFTER INSERT ON jobs WHEN NEW.state = 'queued' BEGIN
    INSERT INTO waiting (priority, user, queued, first_seq) VALUES (NEW.priority, NEW.user, 1, NEW.seq)
    ON CONFLICT (priority, user) DO UPDATE SET queued = queued + 1, first_seq = MIN(first_seq, excluded.first_seq);
END;
CREATE TRIGGER IF NOT EXISTS waiting_on_enter AFTER UPDATE OF state, priority, user ON jobs
WHEN NEW.state = 'queued' BEGIN
    INSERT INTO waiting (priority, user, queued, first_seq) VALUES (NEW.priority, NEW.user, 1, NEW.seq)
    ON CONFLICT (priority, user) DO UPDATE SET queued = queued + 1, first_seq = MIN(first_seq, excluded.first_seq);
END;
CREATE TRIGGER IF NOT EXISTS waiting_on_leave AFTER UPDATE OF state, priority, user ON jobs
WHEN OLD.state = 'queued' BEGIN
    UPDATE waiting SET queued = queued - 1, first_seq = COALESCE((SELECT MIN(seq) FROM jobs
        WHERE state = 'queued' AND priority = OLD.priority AND user = OLD.user), first_seq)
    WHERE priority = OLD.priority AND user = OLD.user;
    DELETE FROM waiting WHERE priority = OLD.priority AND user = OLD.user AND queued <= 0;
END;
CREATE TRIGGER IF NOT EXISTS waiting_on_delete AFTER DELETE ON jobs WHEN OLD.state = 'queued' BEGIN
    UPDATE waiting SET queued = queued - 1, first_seq = COALESCE((SELECT MIN(seq) FROM jobs
        WHERE state = 'queued' AND priority = OLD.priority AND user = OLD.user), first_seq)
    WHERE priority = OLD.priority AND user = OLD.user;
    DELETE FROM waiting WHERE priority = OLD.priority AND user = OLD.user AND queued <= 0;
END;
DELETE FROM waiting;
INSERT INTO waiting (priority, user, queued, first_seq)
    SELECT priority, user, COUNT(*), MIN(seq) FROM jobs WHERE state = 'queued' GROUP BY priority, user;
PRAGMA user_version = 2;
"""

_COLUMNS = (
    "id, user, priority, state, payload, fingerprint, attempts, created_at, started_at, finished_at, progress,"
    " progress_text, result, error, cancel_requested, cached"
)
_CANCELLED = "Cancelled."
_AVERAGE_OVER = 20  # finished jobs the duration estimate looks at
_BUSY_TIMEOUT_MS = 5000  # how long to wait for the other process's write to finish
_BATCH = 64  # operations that may share one transaction; a batch holds the write lock for a few milliseconds at most

_T = TypeVar("_T")


def _job(row: Sequence[Any]) -> Job:
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


# Whose turn it is in a class, over ``waiting AS w LEFT JOIN turns AS t``: the user served least recently first. Never
# served sorts as 0, before every served user; ties (only among the never-served) go to the oldest waiting job.
# claim() and positions both use it, so they always agree.
_TURN_ORDER = "COALESCE(t.served_order, 0), w.first_seq"
_WAITING_WITH_TURNS = "waiting AS w LEFT JOIN turns AS t ON t.user = w.user AND t.priority = w.priority"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _about(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes <= 1:
        return "about a minute"
    if minutes < 120:
        return f"about {minutes} minutes"
    return f"about {round(minutes / 60)} hours"


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a read-then-write is atomic across processes.
    # timeout= is SQLite's busy timeout: how long to wait while the other process writes.
    db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL is safe with WAL (a power cut may lose the last commits, never corrupts) and saves an fsync a job.
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    except BaseException:
        db.close()
        raise
    return db


@dataclass(slots=True)
class _Call:
    """One operation waiting for the queue's thread, and the future its caller awaits."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    operation: Callable[..., Any]
    args: Sequence[Any]
    writes: bool


def _settle(outcomes: list[tuple[_Call, Any, Exception | None]]) -> None:
    """On the event loop: hand results (or errors) to the callers still waiting."""
    for call, result, error in outcomes:
        if call.future.done():  # its caller was cancelled
            continue
        if error is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(error)


class JobQueue:
    """The queue over one SQLite file. Open it with ``await JobQueue.open(path)`` and close it when done.

    One instance may be shared by any number of tasks of one event loop (its operations run one at a time, in the
    order they were called, on the queue's own thread); other processes may open the same file at the same time.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        path: Path,
        limits: QueueLimits,
        clock: Callable[[], float],
    ) -> None:
        self._db = db  # used on the executor's thread only
        self._executor = executor
        self._pending: deque[_Call] = deque()  # called, not yet taken by the thread
        self._closed = False
        self.path = path
        self.limits = limits
        self._clock = clock

    @classmethod
    async def open(
        cls,
        path: str | Path,
        limits: QueueLimits = QueueLimits(),  # frozen, so sharing the default is safe
        *,
        clock: Callable[[], float] = time.time,
    ) -> JobQueue:
        path = Path(path)
        # One thread: one connection, one transaction at a time, and operations run in the order they were called.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobqueue")
        try:
            db = await asyncio.wrap_future(executor.submit(_connect, path))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor, path, limits, clock)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # operations called from now on are refused; those called before run first
        try:
            await asyncio.wrap_future(self._executor.submit(self._db.close))
        finally:
            self._executor.shutdown(wait=False)  # nothing is left for the thread to do, so it ends now

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------------
    # Each public operation is one function of (connection, arguments...) run whole on the queue's thread. Operations
    # called while the thread is busy share one transaction when it gets to them (up to _BATCH of them, each in its
    # own savepoint), so a burst costs one commit and one wake-up of the event loop rather than one per operation.

    async def _write(self, operation: Callable[..., _T], *args: Any) -> _T:
        return await self._run(operation, args, writes=True)

    async def _read(self, operation: Callable[..., _T], *args: Any) -> _T:
        return await self._run(operation, args, writes=False)

    async def _run(self, operation: Callable[..., _T], args: Sequence[Any], *, writes: bool) -> _T:
        if self._closed:
            raise RuntimeError("This job queue has been closed.")
        loop = asyncio.get_running_loop()
        call = _Call(loop, loop.create_future(), operation, args, writes)
        self._pending.append(call)
        self._executor.submit(self._serve)  # one turn of the thread per call: it finds this call or an earlier turn did
        return await call.future

    def _serve(self) -> None:
        """On the queue's thread: run the operations waiting (up to _BATCH), then hand back their outcomes."""
        batch: list[_Call] = []
        while self._pending and len(batch) < _BATCH:
            call = self._pending.popleft()
            if not call.future.cancelled():
                batch.append(call)
        if not batch:
            return
        outcomes = self._transaction(batch)
        loops: dict[asyncio.AbstractEventLoop, list[tuple[_Call, Any, Exception | None]]] = {}
        for outcome in outcomes:
            loops.setdefault(outcome[0].loop, []).append(outcome)
        for loop, settled in loops.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, settled)

    def _transaction(self, batch: list[_Call]) -> list[tuple[_Call, Any, Exception | None]]:
        db = self._db
        outcomes: list[tuple[_Call, Any, Exception | None]] = []
        try:
            # Writes take the write lock at once (BEGIN IMMEDIATE), so a read-then-write is atomic across processes.
            db.execute("BEGIN IMMEDIATE" if any(call.writes for call in batch) else "BEGIN")
            for call in batch:
                db.execute("SAVEPOINT operation")
                try:
                    outcomes.append((call, call.operation(db, *call.args), None))
                except Exception as error:  # a refusal, a job not found...: undo this operation only
                    db.execute("ROLLBACK TO operation")
                    outcomes.append((call, None, error))
                else:
                    if call.future.cancelled():  # its caller stopped waiting: undo rather than commit unseen
                        db.execute("ROLLBACK TO operation")
                db.execute("RELEASE operation")
            db.execute("COMMIT")
        except Exception as error:  # the transaction as a whole failed (the file locked too long, a full disk)
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(call, None, error) for call in batch]
        return outcomes

    @staticmethod
    def _fetch(db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    @staticmethod
    def _update(db: sqlite3.Connection, job_id: str, sets: str, params: Sequence[Any]) -> Job:
        return _job(
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ? RETURNING {_COLUMNS}", (*params, job_id)).fetchone()
        )

    def _running(self, db: sqlite3.Connection, job_id: str) -> Job:
        job = self._fetch(db, job_id)
        if job.state is not JobState.RUNNING:
            raise JobNotRunning(job)
        return job

    def _average(self, db: sqlite3.Connection) -> float:
        average, count = db.execute(
            "SELECT AVG(finished_at - started_at), COUNT(*) FROM (SELECT finished_at, started_at FROM jobs"
            " WHERE state = 'done' AND cached = 0 AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?)",
            (_AVERAGE_OVER,),
        ).fetchone()
        return float(average) if count else self.limits.seconds_per_job

    @staticmethod
    def _rank(db: sqlite3.Connection, seq: int, user: str, priority: int) -> int:
        """The position of a queued job (0: it is next), in closed form from the waiting summary.

        Serving someone sends them to the back of the turn order, so a class is served in plain rounds: each round
        takes one job from every user who still has one, always in the same order of turns. If the job is its
        owner's k-th waiting job in its class (k from 0), then before it come: every waiting job of the classes
        above; k whole rounds (min(queued, k) jobs of each user); and, in round k, the users ahead in turn who still
        have a k-th job.
        """
        params = {"priority": priority, "user": user, "seq": seq}
        params["k"], params["served"], params["first"] = db.execute(
            "SELECT (SELECT COUNT(*) FROM jobs"
            "   WHERE state = 'queued' AND priority = :priority AND user = :user AND seq < :seq),"
            f" {_TURN_ORDER} FROM {_WAITING_WITH_TURNS} WHERE w.priority = :priority AND w.user = :user",
            params,
        ).fetchone()
        [(position,)] = db.execute(
            "SELECT (SELECT COALESCE(SUM(queued), 0) FROM waiting WHERE priority < :priority)"
            f" + SUM(MIN(w.queued, :k) + (w.queued > :k AND ({_TURN_ORDER}) < (:served, :first)))"
            f" FROM {_WAITING_WITH_TURNS} WHERE w.priority = :priority",
            params,
        )
        return position

    def _place(self, db: sqlite3.Connection, job_id: str, with_estimate: bool) -> tuple[int | None, float | None]:
        row = db.execute("SELECT seq, user, priority, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        seq, user, priority, state = row
        if state != JobState.QUEUED:
            return None, None
        position = self._rank(db, seq, user, priority)
        return position, (position * self._average(db) if with_estimate else None)

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
        return await self._write(self._submit, payload, user, Priority(priority), fingerprint, exempt, self._clock())

    def _submit(
        self,
        db: sqlite3.Connection,
        payload: str,
        user: str,
        priority: Priority,
        fingerprint: str | None,
        exempt: bool,
        now: float,
    ) -> Job:
        limits = self.limits
        if fingerprint is not None:
            cached = self._answer_from_cache(db, payload, user, priority, fingerprint, now)
            if cached is not None:
                if not exempt:
                    self._note_submission(db, user, now)
                return cached
        mine, last_submit, queued = db.execute(
            "SELECT"
            " (SELECT COALESCE(SUM(queued), 0) FROM waiting WHERE user = :user)"
            # +user: look through the (few) running jobs, not through all of this user's old ones
            " + (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND +user = :user),"
            " (SELECT last_submit_at FROM submitters WHERE user = :user),"
            " (SELECT COALESCE(SUM(queued), 0) FROM waiting)",
            {"user": user},
        ).fetchone()
        if not exempt:
            if mine >= limits.per_user:
                raise QueueRefused(
                    "user_limit",
                    self._time_until_one_finishes(db, user),
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
            wait = max(1.0, jobs_to_wait * self._average(db))
            raise QueueRefused("queue_full", wait, f"The queue is full right now; please try again in {_about(wait)}.")
        job = self._insert(
            db,
            "INSERT INTO jobs (id, user, priority, state, payload, fingerprint, created_at)"
            " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
            (user, int(priority), payload, fingerprint, now),
        )
        if not exempt:
            self._note_submission(db, user, now)
        return job

    @staticmethod
    def _insert(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Job:
        while True:
            try:
                row = db.execute(f"{sql} RETURNING {_COLUMNS}", (secrets.token_urlsafe(9), *params)).fetchone()
            except sqlite3.IntegrityError:  # an id collision: 72 random bits make this all but impossible
                continue
            return _job(row)

    def _answer_from_cache(
        self, db: sqlite3.Connection, payload: str, user: str, priority: Priority, fingerprint: str, now: float
    ) -> Job | None:
        found = db.execute(
            "SELECT result FROM jobs WHERE fingerprint = ? AND state = 'done' ORDER BY seq DESC LIMIT 1",
            (fingerprint,),
        ).fetchone()
        if found is None:
            return None
        return self._insert(
            db,
            "INSERT INTO jobs (id, user, priority, state, payload, fingerprint, created_at, started_at, finished_at,"
            " progress, result, cached) VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, 1, ?, 1)",
            (user, int(priority), payload, fingerprint, now, now, now, found[0]),
        )

    @staticmethod
    def _note_submission(db: sqlite3.Connection, user: str, now: float) -> None:
        db.execute(
            "INSERT INTO submitters (user, last_submit_at) VALUES (?, ?)"
            " ON CONFLICT (user) DO UPDATE SET last_submit_at = excluded.last_submit_at",
            (user, now),
        )

    def _time_until_one_finishes(self, db: sqlite3.Connection, user: str) -> float:
        average = self._average(db)
        rows = db.execute(
            "SELECT seq, priority, state FROM jobs WHERE user = ? AND state IN ('queued', 'running')", (user,)
        ).fetchall()
        if any(state == JobState.RUNNING for _, _, state in rows):
            return average
        positions = [self._rank(db, seq, user, priority) for seq, priority, _ in rows]
        return (min(positions, default=0) + 1) * average

    # -- the worker's side ------------------------------------------------------------------------------------------

    async def claim(self) -> Job | None:
        """Take the next job in fair order and mark it running, or return None when nothing is queued."""
        return await self._write(self._claim, self._clock())

    @staticmethod
    def _claim(db: sqlite3.Connection, now: float) -> Job | None:
        # The first class with anyone waiting; in it, the user whose turn it is, and their oldest job.
        turn = db.execute(
            f"SELECT w.priority, w.user, w.first_seq FROM {_WAITING_WITH_TURNS}"
            f" WHERE w.priority = (SELECT MIN(priority) FROM waiting) ORDER BY {_TURN_ORDER} LIMIT 1"
        ).fetchone()
        if turn is None:
            return None
        priority, user, seq = turn
        row = db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, progress = 0,"
            f" progress_text = '' WHERE seq = ? AND state = 'queued' RETURNING {_COLUMNS}",
            (now, seq),
        ).fetchone()
        if row is None:  # the triggers keep the summary exact, so this is a bug: never serve a job twice for it
            raise RuntimeError("The queue's waiting summary is out of step with its jobs; reopening rebuilds it.")
        db.execute(
            "INSERT INTO turns (user, priority, served_order, last_served_at)"
            " VALUES (?, ?, (SELECT COALESCE(MAX(served_order), 0) + 1 FROM turns), ?)"
            " ON CONFLICT (user, priority) DO UPDATE"
            " SET served_order = excluded.served_order, last_served_at = excluded.last_served_at",
            (user, priority, now),
        )
        return _job(row)

    async def set_progress(self, job_id: str, fraction: float, text: str = "") -> bool:
        """Store a running job's progress; True means stop working on it (cancelled, or no longer running)."""
        return await self._write(self._set_progress, job_id, min(1.0, max(0.0, fraction)), text)

    def _set_progress(self, db: sqlite3.Connection, job_id: str, fraction: float, text: str) -> bool:
        found = db.execute(
            "UPDATE jobs SET progress = ?, progress_text = ? WHERE id = ? AND state = 'running'"
            " RETURNING cancel_requested",
            (fraction, text, job_id),
        ).fetchone()
        if found is not None:
            return bool(found[0])
        self._fetch(db, job_id)  # raises JobNotFound for an unknown id
        return True

    async def finish(self, job_id: str, result: str) -> Job:
        return await self._write(self._finish, job_id, result, self._clock())

    def _finish(self, db: sqlite3.Connection, job_id: str, result: str, now: float) -> Job:
        self._running(db, job_id)
        return self._update(db, job_id, "state = 'done', result = ?, finished_at = ?, progress = 1", (result, now))

    async def fail(self, job_id: str, error: str) -> Job:
        return await self._write(self._fail, job_id, error, self._clock())

    def _fail(self, db: sqlite3.Connection, job_id: str, error: str, now: float) -> Job:
        self._running(db, job_id)
        return self._update(db, job_id, "state = 'failed', error = ?, finished_at = ?", (error, now))

    async def retry(self, job_id: str, error: str) -> Job:
        """Put a job that crashed back in the queue, or fail it for good once it has used up its attempts."""
        return await self._write(self._retry, job_id, error, self._clock())

    def _retry(self, db: sqlite3.Connection, job_id: str, error: str, now: float) -> Job:
        job = self._running(db, job_id)
        if job.cancel_requested:
            return self._set_cancelled(db, job_id, now)
        if job.attempts >= self.limits.max_attempts:
            message = (
                f"This request failed {job.attempts} times ({error}); it has been dropped."
                " Try another image or settings."
            )
            return self._update(db, job_id, "state = 'failed', error = ?, finished_at = ?", (message, now))
        return self._requeue(db, job_id)

    async def release(self, job_id: str) -> Job:
        """Give back a running job the worker stopped for a clean shut-down: it waits again at the front of its
        owner's line with this attempt not counted (a cancellation asked for meanwhile is carried out instead).

        A job no longer running (finished from another process) is returned as it is.
        """
        return await self._write(self._release, job_id, self._clock())

    def _release(self, db: sqlite3.Connection, job_id: str, now: float) -> Job:
        job = self._fetch(db, job_id)
        if job.state is not JobState.RUNNING:
            return job
        if job.cancel_requested:
            return self._set_cancelled(db, job_id, now)
        return self._update(
            db,
            job_id,
            "state = 'queued', attempts = MAX(attempts - 1, 0), started_at = NULL, progress = 0, progress_text = ''",
            (),
        )

    async def mark_cancelled(self, job_id: str) -> Job:
        """The worker stopped a job whose cancellation was requested."""
        return await self._write(self._mark_cancelled, job_id, self._clock())

    def _mark_cancelled(self, db: sqlite3.Connection, job_id: str, now: float) -> Job:
        job = self._fetch(db, job_id)
        if job.state is JobState.CANCELLED:
            return job
        if job.state is not JobState.RUNNING:
            raise JobNotRunning(job)
        return self._set_cancelled(db, job_id, now)

    def _set_cancelled(self, db: sqlite3.Connection, job_id: str, now: float) -> Job:
        return self._update(db, job_id, "state = 'cancelled', error = ?, finished_at = ?", (_CANCELLED, now))

    def _requeue(self, db: sqlite3.Connection, job_id: str) -> Job:
        # The job keeps its seq, so it goes back to the front of its owner's line rather than the back.
        return self._update(db, job_id, "state = 'queued', started_at = NULL, progress = 0, progress_text = ''", ())

    async def recover(self) -> list[Job]:
        """At start-up, deal with the jobs a dead service left running; returns every job it changed.

        Call it only from the service, before its workers start: it assumes nothing is running anywhere.
        """
        return await self._write(self._recover, self._clock())

    def _recover(self, db: sqlite3.Connection, now: float) -> list[Job]:
        rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
        touched = []
        for job in map(_job, rows):
            if job.cancel_requested:
                touched.append(self._set_cancelled(db, job.id, now))
            elif job.attempts >= self.limits.max_attempts:
                message = f"This request stopped the dreaming worker {job.attempts} times and has been dropped."
                touched.append(self._update(db, job.id, "state = 'failed', error = ?, finished_at = ?", (message, now)))
            else:
                touched.append(self._requeue(db, job.id))
        return touched

    # -- the owner's side -------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str, *, by_user: str | None = None, admin: bool = False) -> Job:
        """Cancel a waiting job at once, or ask the worker to stop a running one.

        ``by_user`` is who asks; None means the operator at the command line, who may cancel anything.
        """
        return await self._write(self._cancel, job_id, by_user, admin, self._clock())

    def _cancel(self, db: sqlite3.Connection, job_id: str, by_user: str | None, admin: bool, now: float) -> Job:
        job = self._fetch(db, job_id)
        if by_user is not None and not admin and by_user != job.user:
            raise PermissionDenied("Only the person who asked (or an admin) can cancel that dream.")
        if job.finished:
            raise JobNotCancellable("That dream has already finished.")
        if job.state is JobState.QUEUED:
            return self._set_cancelled(db, job_id, now)
        return self._update(db, job_id, "cancel_requested = 1", ())

    async def get(self, job_id: str) -> Job:
        return await self._read(self._fetch, job_id)

    async def place(self, job_id: str) -> tuple[int | None, float | None]:
        """(position, estimate) of a job in one go; (None, None) if it is not waiting. See position() and estimate()."""
        return await self._read(self._place, job_id, True)

    async def position(self, job_id: str) -> int | None:
        """How many jobs will be served before this one (0: it is next), or None if it is not waiting."""
        return (await self._read(self._place, job_id, False))[0]

    async def estimate(self, job_id: str) -> float | None:
        """Seconds until the job starts, or None if it is not waiting."""
        return (await self.place(job_id))[1]

    async def average_seconds(self) -> float:
        """Mean duration of the last finished dreams (answers from the cache excluded)."""
        return await self._read(self._average)

    # -- listings ---------------------------------------------------------------------------------------------------

    async def counts(self) -> dict[JobState, int]:
        rows = await self._read(_fetch_all, "SELECT state, COUNT(*) FROM jobs GROUP BY state", ())
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
        rows = await self._read(_fetch_all, f"{sql} ORDER BY seq DESC LIMIT ?", (*params, limit))
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
        rows = await self._read(
            _fetch_all,
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
        rows = await self._write(
            _fetch_all,
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < :ts"
            " AND NOT (state = 'done' AND cached = 0 AND fingerprint IS NOT NULL AND EXISTS ("
            "   SELECT 1 FROM jobs AS copy WHERE copy.fingerprint = jobs.fingerprint AND copy.state = 'done'"
            "   AND copy.cached = 1 AND copy.result = jobs.result AND copy.finished_at >= :ts))"
            f" RETURNING {_COLUMNS}",
            {"ts": timestamp},
        )
        return [_job(row) for row in rows]


def _fetch_all(db: sqlite3.Connection, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
    return db.execute(sql, params).fetchall()
