"""What every social adapter (X, Mastodon, Bluesky) needs, kept once: the platform-neutral bookkeeping.

All of it lives in the service's own SQLite file (tables prefixed ``social_``), one row set per platform:

- cursors: the newest post read from each stream, so a restart neither misses nor repeats a post;
- the ledger of answered posts, for exactly-once answers: the intent (post id, job id) is recorded before
  posting and the reply's id after; a crash between the two leaves an intent that :func:`post_once`
  reconciles (looking for the bot's reply on the platform) before it posts again;
- opt-outs (a "stop" reply, a block list, #nobot), the per-person daily "how to use" reply, the loop guard
  (at most a few answers per conversation);
- the spending budget: per-call prices, daily and monthly caps in dollars, spend per UTC day and month.

:class:`SocialAdapter` is the life cycle the three adapters share (the poll loop and its pauses, close, status,
answering what a crash left unanswered); each adapter adds only its platform's calls and words.

Time comes from a ``clock`` callable (seconds since the epoch), so tests choose the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.backoff import Backoff
from bot.jobqueue import QueueError
from bot.media import MediaError, MediaLimits, check_size

if TYPE_CHECKING:
    from bot.service import DreamService, JobView

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS social_cursors (
    platform TEXT NOT NULL, stream TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (platform, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS social_ledger (
    platform TEXT NOT NULL,
    post_id TEXT NOT NULL,          -- the post answered, or "own:<key>" for a post to the bot's own account
    kind TEXT NOT NULL,             -- dream, howto, error, optout, own
    job_id TEXT,
    state TEXT NOT NULL,            -- received, posting, posted, skipped
    reply_id TEXT,
    conversation_id TEXT,
    address TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (platform, post_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS social_ledger_by_state ON social_ledger (platform, state);
CREATE INDEX IF NOT EXISTS social_ledger_by_job ON social_ledger (job_id);
CREATE TABLE IF NOT EXISTS social_optouts (
    platform TEXT NOT NULL, user_id TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (platform, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS social_howto (
    platform TEXT NOT NULL, user_id TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (platform, user_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS social_spend (
    platform TEXT NOT NULL, period TEXT NOT NULL, dollars REAL NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (platform, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS social_counters (
    platform TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (platform, name)
) WITHOUT ROWID;
"""


def utc_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def utc_month(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m")


@dataclass(frozen=True)
class LedgerEntry:
    post_id: str
    kind: str
    job_id: str | None
    state: str
    reply_id: str | None
    conversation_id: str | None
    address: str


class SocialStore:
    """One platform's bookkeeping, in the service's database (its own connection; WAL lets both write)."""

    def __init__(self, path: str | Path, platform: str, clock: Clock = time.time) -> None:
        self.platform = platform
        self.clock = clock
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # cursors
    def cursor(self, stream: str) -> str | None:
        row = self.db.execute(
            "SELECT value FROM social_cursors WHERE platform = ? AND stream = ?", (self.platform, stream)
        ).fetchone()
        return row[0] if row else None

    def set_cursor(self, stream: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO social_cursors VALUES (?, ?, ?)", (self.platform, stream, value))

    # the adapter's state, kept where `dreambot status` (another process) can read it
    def record_state(self, state: str, error: str = "", until: float | None = None) -> None:
        """``state``: connected, polling, backing off, rate limited, stopped; ``error``: the last one, short."""
        previous = self.state() or {}
        value = {
            "state": state,
            "last_error": error or previous.get("last_error", ""),
            "last_error_at": self.clock() if error else previous.get("last_error_at"),
            "until": until,
            "at": self.clock(),
        }
        self.set_cursor("_state", json.dumps(value))

    def state(self) -> dict[str, Any] | None:
        value = self.cursor("_state")
        return json.loads(value) if value else None

    # the ledger
    def entry(self, post_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            "SELECT post_id, kind, job_id, state, reply_id, conversation_id, address FROM social_ledger "
            "WHERE platform = ? AND post_id = ?",
            (self.platform, post_id),
        ).fetchone()
        return LedgerEntry(*row) if row else None

    def receive(self, post_id: str, kind: str, conversation_id: str | None = None, address: str = "{}") -> bool:
        """Record that a post will be handled; False when it was already (a repeat read, a restart)."""
        now = self.clock()
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO social_ledger (platform, post_id, kind, state, conversation_id, address, "
            "created_at, updated_at) VALUES (?, ?, ?, 'received', ?, ?, ?, ?)",
            (self.platform, post_id, kind, conversation_id, address, now, now),
        )
        return cursor.rowcount == 1

    def update(self, post_id: str, **values: Any) -> None:
        allowed = {"kind", "job_id", "state", "reply_id"}
        assert set(values) <= allowed, values
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.db.execute(
            f"UPDATE social_ledger SET {assignments}, updated_at = ? WHERE platform = ? AND post_id = ?",
            (*values.values(), self.clock(), self.platform, post_id),
        )

    def forget(self, post_id: str) -> None:
        self.db.execute("DELETE FROM social_ledger WHERE platform = ? AND post_id = ?", (self.platform, post_id))

    def entry_of_job(self, job_id: str) -> LedgerEntry | None:
        row = self.db.execute(
            "SELECT post_id, kind, job_id, state, reply_id, conversation_id, address FROM social_ledger "
            "WHERE platform = ? AND job_id = ?",
            (self.platform, job_id),
        ).fetchone()
        return LedgerEntry(*row) if row else None

    def unfinished(self) -> list[LedgerEntry]:
        """Entries a crash (or a stop) left between intent and reply."""
        rows = self.db.execute(
            "SELECT post_id, kind, job_id, state, reply_id, conversation_id, address FROM social_ledger "
            "WHERE platform = ? AND state IN ('received', 'posting') ORDER BY created_at",
            (self.platform,),
        ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def answers_in_conversation(self, conversation_id: str) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM social_ledger WHERE platform = ? AND conversation_id = ? AND state != 'skipped'",
            (self.platform, conversation_id),
        ).fetchone()
        return row[0]

    # people
    def opted_out(self, user_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM social_optouts WHERE platform = ? AND user_id = ?", (self.platform, user_id)
        ).fetchone()
        return row is not None

    def opt_out(self, user_id: str, reason: str) -> bool:
        """True the first time (then the person gets one confirmation)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO social_optouts VALUES (?, ?, ?, ?)", (self.platform, user_id, reason, self.clock())
        )
        return cursor.rowcount == 1

    def claim_howto(self, user_id: str) -> bool:
        """True at most once per person per UTC day: the "how to use" reply is never repeated that day."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO social_howto VALUES (?, ?, ?)", (self.platform, user_id, utc_day(self.clock()))
        )
        return cursor.rowcount == 1

    # counters and spend
    def count(self, name: str, by: int = 1) -> None:
        self.db.execute(
            "INSERT INTO social_counters VALUES (?, ?, ?) ON CONFLICT (platform, name) DO UPDATE SET value = value + ?",
            (self.platform, name, by, by),
        )

    def counters(self) -> dict[str, int]:
        rows = self.db.execute("SELECT name, value FROM social_counters WHERE platform = ?", (self.platform,))
        return dict(rows.fetchall())

    def add_spend(self, dollars: float, calls: int = 1) -> None:
        now = self.clock()
        for period in (utc_day(now), utc_month(now)):
            self.db.execute(
                "INSERT INTO social_spend VALUES (?, ?, ?, ?) ON CONFLICT (platform, period) "
                "DO UPDATE SET dollars = dollars + excluded.dollars, calls = calls + excluded.calls",
                (self.platform, period, dollars, calls),
            )

    def spent(self, period: str) -> float:
        row = self.db.execute(
            "SELECT dollars FROM social_spend WHERE platform = ? AND period = ?", (self.platform, period)
        ).fetchone()
        return row[0] if row else 0.0


class BudgetExhausted(Exception):
    """The day's or month's money is spent: reading and answering wait for the next period."""

    def __init__(self, resumes_at: float) -> None:
        super().__init__(f"budget spent until {datetime.fromtimestamp(resumes_at, UTC):%Y-%m-%d %H:%M} UTC")
        self.resumes_at = resumes_at


class Budget:
    """Per-call prices and daily/monthly caps in dollars; every call is charged, none goes past a cap."""

    def __init__(self, store: SocialStore, prices: Mapping[str, float], daily: float, monthly: float) -> None:
        self.store = store
        self.prices = dict(prices)
        self.daily = daily
        self.monthly = monthly

    def _now(self) -> float:
        return self.store.clock()

    def spent_today(self) -> float:
        return self.store.spent(utc_day(self._now()))

    def spent_this_month(self) -> float:
        return self.store.spent(utc_month(self._now()))

    def cost(self, kind: str, count: int = 1) -> float:
        return self.prices[kind] * count

    def check(self, kind: str, count: int = 1) -> None:
        """Raise BudgetExhausted unless ``count`` calls of ``kind`` still fit in today's and this month's caps."""
        cost = self.cost(kind, count)
        if self.spent_this_month() + cost > self.monthly + 1e-9:
            raise BudgetExhausted(next_month(self._now()))
        if self.spent_today() + cost > self.daily + 1e-9:
            raise BudgetExhausted(next_day(self._now()))

    def charge(self, kind: str, count: int = 1) -> None:
        if count:
            self.store.add_spend(self.cost(kind, count), count)

    def exhausted(self) -> bool:
        cheapest = min(self.prices.values())
        return self.spent_today() + cheapest > self.daily + 1e-9 or self.spent_this_month() + cheapest > self.monthly

    def status(self) -> dict[str, Any]:
        today, month = self.spent_today(), self.spent_this_month()
        return {
            "spent_today": round(today, 4),
            "spent_this_month": round(month, 4),
            "remaining_today": round(max(0.0, min(self.daily - today, self.monthly - month)), 4),
            "remaining_this_month": round(max(0.0, self.monthly - month), 4),
            "daily_budget": self.daily,
            "monthly_budget": self.monthly,
            "exhausted": self.exhausted(),
        }


def next_day(timestamp: float) -> float:
    day = datetime.fromtimestamp(timestamp, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).timestamp()


def next_month(timestamp: float) -> float:
    now = datetime.fromtimestamp(timestamp, UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


class RateWindow:
    """At most ``limit`` calls in any ``period`` seconds (a platform's published limit): callers wait, never fail.

    The times of recent calls are kept in memory; a restart starts a fresh window, which the platform's own
    429 answers (handled by each adapter) cover.
    """

    def __init__(self, limit: int, period: float, clock: Clock = time.time) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.calls: list[float] = []

    def wait_time(self) -> float:
        """Seconds until one more call fits (0 when it fits now)."""
        now = self.clock()
        self.calls = [at for at in self.calls if at > now - self.period]
        if len(self.calls) < self.limit:
            return 0.0
        return self.calls[0] + self.period - now

    async def acquire(self, sleep: Callable[[float], Awaitable[Any]]) -> None:
        while (wait := self.wait_time()) > 0:
            await sleep(wait)
        self.calls.append(self.clock())


def plain_text(html: str) -> str:
    """The words of a Mastodon-style HTML post or bio: tags dropped, line breaks kept as spaces."""
    from html.parser import HTMLParser

    class Words(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in ("br", "p"):
                self.parts.append(" ")

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Words()
    parser.feed(html or "")
    parser.close()
    return " ".join("".join(parser.parts).split())


def refuses_bots(bio: str) -> bool:
    """A bio with #nobot or #nobots (any case): the person asked bots to leave them alone."""
    words = {word.strip(".,;:!?()").lower() for word in bio.split()}
    return bool(words & {"#nobot", "#nobots"})


def without_mentions(text: str) -> str:
    """The text with @mentions (``@bot``, ``@bot@example.social``, ``@bot.bsky.social``) removed."""
    return " ".join(word for word in text.split() if not word.startswith("@"))


async def fetch_photo(session: Any, url: str, origin: str, limits: MediaLimits) -> bytes:
    """A photo from a post, size-capped while it streams (decoding and checks are the service's shared ingest).

    Only https, or the platform's own address (``origin``, e.g. a self-hosted instance on plain http), is fetched.
    """
    parts, home = urlsplit(url), urlsplit(origin)
    if not (parts.scheme == "https" or (parts.scheme, parts.netloc) == (home.scheme, home.netloc)):
        raise MediaError("I can only dream photos served over https; please post it again.")

    def fetch() -> bytes:
        with session.get(url, stream=True, timeout=30) as response:
            if response.status_code != 200:
                raise MediaError("I could not fetch that photo; please post it again.")
            data = b""
            for chunk in response.iter_content(65536):
                data += chunk
                check_size(len(data), limits)
            return data

    return await asyncio.get_running_loop().run_in_executor(None, fetch)


def wants_stop(text: str) -> bool:
    """A reply that asks the bot to leave the person alone: "stop", "STOP.", "@DreamBot stop"."""
    words = [w.strip(".!").lower() for w in text.split() if not w.startswith("@")]
    return words in (["stop"], ["unsubscribe"], ["stop", "please"], ["please", "stop"])


async def post_once(
    store: SocialStore,
    post_id: str,
    post: Callable[[], Awaitable[str]],
    find_existing: Callable[[], Awaitable[str | None]],
) -> str:
    """Post at most once for ``post_id``: the intent is recorded, then the post, then its id.

    An entry already ``posting`` (a crash between posting and recording) is first reconciled with
    ``find_existing()``, the platform's look for the bot's own reply; only when none is found is it posted again.
    """
    entry = store.entry(post_id)
    if entry is not None and entry.state == "posted" and entry.reply_id:
        return entry.reply_id
    if entry is not None and entry.state == "posting":
        existing = await find_existing()
        if existing is not None:
            log.info("%s: post %s was answered before a restart (%s)", store.platform, post_id, existing)
            store.update(post_id, state="posted", reply_id=existing)
            return existing
    store.update(post_id, state="posting")
    reply_id = await post()
    store.update(post_id, state="posted", reply_id=reply_id)
    return reply_id


class RateLimited(Exception):
    """The platform answered 429: calls wait until ``reset_at`` (seconds since the epoch); nothing is dropped."""

    def __init__(self, reset_at: float) -> None:
        super().__init__(f"rate limited until {reset_at:.0f}")
        self.reset_at = reset_at


class SocialAdapter:
    """What X, Mastodon and Bluesky do alike around their platform's calls.

    The poll loop (a failure pauses this platform alone, never the others), close, the status the service shows,
    the ledger's "skipped", and answering after a restart. A subclass names its ``platform`` and implements
    ``poll_once``, ``on_job``, ``deliver`` and ``_pause_for`` (which of its platform's errors pause the loop, how long).
    """

    platform: str  # the service's name for it: "x", "mastodon", "bluesky"
    name: str  # the platform in log lines: "X", "Mastodon", "Bluesky"
    records_state = True  # the state row `dreambot status` shows (X shows its budget instead)

    def __init__(self, service: DreamService, settings: Any, keys: Any, clock: Clock, sleep: Any) -> None:
        self.service = service
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.sleep = sleep
        self.store = SocialStore(service.config.database_path, self.platform, clock)
        self.backoff = Backoff()
        self.paused_until = 0.0
        self.pause_reason = ""
        self._task: asyncio.Task | None = None
        self._closed = False
        self._log = logging.getLogger(type(self).__module__)  # each adapter's lines under its own module's name
        service.add_listener(self.on_job, platform=self.platform)
        service.platform_status[self.platform] = self.status

    # what each adapter implements
    async def poll_once(self) -> None:
        raise NotImplementedError

    async def on_job(self, view: JobView) -> None:
        raise NotImplementedError

    async def deliver(self, view: JobView) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ life cycle

    async def _resume(self, poll: bool) -> None:
        """Post what a crash left unposted, then poll in the background (``poll=False``: the caller polls: tests)."""
        await self.reconcile()
        if poll:
            self._task = asyncio.create_task(self._poll_forever(), name=f"{self.platform}-poll")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.records_state:
            with contextlib.suppress(Exception):
                self.store.record_state("stopped")
        self.store.close()

    def _pause(self) -> dict[str, Any]:
        return {"paused_until": self.paused_until or None, "pause_reason": self.pause_reason}

    def _status(self, account: str) -> dict[str, Any]:
        """The state as last recorded, the pause and the counters: what ``status()`` shows for most platforms."""
        state = self.store.state() or {"state": "starting"}
        return {
            "state": state["state"],
            "last_error": state.get("last_error", ""),
            **self._pause(),
            "account": account,
            **self.store.counters(),
        }

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _poll_forever(self) -> None:
        while not self._closed:
            wait = self.settings.poll_interval_seconds
            try:
                await self._poll_turn()
                self.backoff.reset()
                self.pause_reason = ""
            except Exception as error:
                pause = await self._pause_for(error)
                if pause is None:
                    raise
                wait, self.pause_reason = pause
            self.paused_until = self.clock() + wait if self.pause_reason else 0.0
            await self._rest(wait)

    async def _poll_turn(self) -> None:
        """One read of the platform, and the state it leaves."""
        await self.poll_once()
        if self.records_state:
            self.store.record_state("polling")

    async def _rest(self, wait: float) -> None:
        """Until the next read."""
        await self.sleep(wait)

    async def _pause_for(self, error: Exception) -> tuple[float, str] | None:
        """How long the loop waits after ``error``, and why; None for an error that is not the platform's."""
        if isinstance(error, RateLimited):
            wait = max(1.0, error.reset_at - self.clock())
            if self.records_state:
                self.store.record_state("rate limited", str(error), self.clock() + wait)
            return wait, "rate limit"
        return None

    def _back_off(self, error: Exception, reason: str) -> tuple[float, str]:
        """A transient failure (unreachable, or one call refused): the loop, and other platforms, go on later."""
        wait = self.backoff.next_wait()
        self._log.warning("%s: %s; trying again in %.0f s", self.name, error, wait)
        if self.records_state:
            self.store.record_state("backing off", str(error)[:200], self.clock() + wait)
        return wait, reason

    # ------------------------------------------------------------------ answering

    async def _deliver_patiently(
        self, view: JobView, transient: tuple[type[Exception], ...], refusals: tuple[type[Exception], ...]
    ) -> None:
        """A finished job's answer: rate limits waited out, ``transient`` failures retried a few times (the rest
        goes out at the next start), ``refusals`` final (the post is skipped, never retried)."""
        if not view.finished or self._closed:
            return
        for _attempt in range(5):
            try:
                await self.deliver(view)
                return
            except RateLimited as limited:  # pace: wait for the window, never drop the answer
                await self.sleep(max(1.0, limited.reset_at - self.clock()))
            except transient as error:
                self._log.warning("%s: the answer to job %s waits (%s)", self.name, view.id, error)
                await self.sleep(self.backoff.next_wait())
            except refusals as error:
                self._log.warning("%s refused the answer to job %s: %s", self.name, view.id, error)
                self._skip(view.destination.get("post_id"), "answers_refused")
                return
        self._log.warning("%s: the answer to job %s goes out at the next start", self.name, view.id)

    def _unanswered(self, view: JobView) -> tuple[str, LedgerEntry] | None:
        """The post a finished job answers and its ledger entry; None when nothing is left to post."""
        post_id = view.destination.get("post_id")
        entry = self.store.entry_of_job(view.id)
        if not post_id or entry is None or entry.state in ("posted", "skipped"):
            return None
        return post_id, entry

    def _skip(self, post_id: str | None, counter: str) -> None:
        """A post never to be answered (the answer was refused, the original deleted), and why, counted."""
        if post_id:
            self.store.update(post_id, state="skipped")
        self.store.count(counter)

    def _own_post(self, key: str) -> tuple[str, str | None]:
        """The ledger id of a post to the bot's own account (recorded now) and its id if it went out already."""
        own = f"own:{key}"
        self.store.receive(own, "own")
        entry = self.store.entry(own)
        posted = entry is not None and entry.state == "posted" and entry.reply_id
        return own, entry.reply_id if posted else None  # type: ignore[union-attr]

    async def reconcile(self) -> None:
        """Answers a crash or a stop left unposted: posted now, once (each adapter's answer looks for itself first)."""
        for entry in self.store.unfinished():
            if entry.kind == "dream" and entry.job_id:
                with contextlib.suppress(QueueError):
                    view = await self.service.view(entry.job_id)
                    if view.finished:
                        await self._answer_unfinished(view)
            elif entry.kind == "dream" and not entry.job_id:
                self.store.forget(entry.post_id)  # a crash before queueing: the cursor did not move, it is read again

    async def _answer_unfinished(self, view: JobView) -> None:
        await self.on_job(view)  # with on_job's retries and refusals
