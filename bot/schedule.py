"""Scheduled posts (the dream of the day): exactly once per run and destination, whatever restarts happen.

APScheduler 3's ``AsyncIOScheduler`` runs in the service's event loop and only says *when to look*; what is due
is decided by DreamBot's own database (tables ``schedule_runs`` and ``schedule_posts`` in the service's SQLite
file), because APScheduler alone drops or repeats runs missed while the bot was down:

- a run is keyed by (schedule, slot), the slot being the due time as a wall clock in the schedule's time zone, so
  the hour a clock goes back twice (daylight saving) is still one run;
- the run row is written before the dream is queued, each destination's row before and after posting; after a
  restart, unfinished runs carry on and only destinations not yet posted are posted (each destination's
  ``post_to_own_account`` is idempotent per key as well, for a crash between posting and recording);
- a run missed while the bot was down is caught up once (the newest missed slot, within ``grace_hours``); older
  missed slots, and one past the grace period, are recorded as missed;
- a failing destination is retried with backoff and reported (log, status, the Discord admin who set a channel)
  while the others post.

Destinations are anything with ``post_to_own_account(image, extension, text, alt, key) -> post id``, keyed by
platform name (``discord``, ``x``, ``mastodon``, ``bluesky``, ``web``): a new platform plugs in from ``bot.app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import random
import re
import sqlite3
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.config import SCHEDULE_DESTINATIONS, SCHEDULE_SOURCES, ConfigError, ScheduleConfig
from bot.jobqueue import Priority, QueueError

if TYPE_CHECKING:
    from bot.options import Command

# bot.options, bot.media and dreamcore (and with them PyTorch) are imported where they are used: checking the
# configuration at start must stay quick for every `dreambot` command.

log = logging.getLogger(__name__)

PLATFORM = "schedule"
PHOTO_TYPES = (".png", ".jpg", ".jpeg", ".webp")
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's 0..6 (7 is Sunday again)
# Platforms' own size limits where bot.media has none yet (Bluesky's blobs are at most 1,000,000 bytes).
OWN_LIMITS = {"bluesky": 1_000_000}
LOOKBACK = timedelta(days=31)  # the furthest back a catch-up looks (a month of a minutely schedule at most)
FINAL_RUN_STATES = ("done", "partial", "missed", "failed")


class OwnAccount(Protocol):
    """A destination: posts to the bot's own account (or channels, or gallery), at most once per ``key``."""

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str: ...


# ---------------------------------------------------------------------------------------------- configuration


def cron_day_of_week(field: str) -> str:
    """Cron's day-of-week field in APScheduler 3's words: numbers count from Sunday = 0 (or 7), as cron does.

    APScheduler 3 counts numbers from Monday, so ``0`` would silently mean Monday; names mean the same to both.
    """
    if not re.search(r"\d", field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", part.strip())
        if not match:
            raise ValueError(f"day-of-week {part!r} mixes numbers and names; use one or the other")
        start, end, step = match.groups()
        if start == "*":
            low, high = 0, 6
        else:
            low = int(start)
            high = int(end) if end is not None else (6 if step else low)
        if not (0 <= low <= 7 and 0 <= high <= 7) or low > high:
            raise ValueError(f"day-of-week {part!r} must be 0-7 (0 and 7 are Sunday), low to high")
        days.update(day % 7 for day in range(low, high + 1, int(step or 1)))
    return ",".join(CRON_DAYS[day] for day in sorted(days))


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else " Use a name such as Europe/Berlin or UTC."
        raise ConfigError(f"{name!r} is not a time zone I know.{hint}") from None


def cron_trigger(schedule: ScheduleConfig) -> Any:
    """The schedule's APScheduler ``CronTrigger``, or a ConfigError sentence."""
    from apscheduler.triggers.cron import CronTrigger

    zone = time_zone(schedule.timezone)
    fields = schedule.cron.split()
    if len(fields) != 5:
        raise ConfigError(
            f"schedule {schedule.name!r}: cron {schedule.cron!r} needs five fields (minute hour day month "
            'day-of-week), e.g. "0 9 * * *" for 09:00 every day.'
        )
    minute, hour, day, month, day_of_week = fields
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=cron_day_of_week(day_of_week), timezone=zone
        )
    except ValueError as error:
        raise ConfigError(f"schedule {schedule.name!r}: cron {schedule.cron!r} is not valid: {error}.") from None


def check_schedules(schedules: tuple[ScheduleConfig, ...]) -> None:
    """Everything that can be checked at start, as sentences: names, cron, time zone, source, destinations."""
    seen: set[str] = set()
    for schedule in schedules:
        label = f"schedule {schedule.name!r}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", schedule.name):
            raise ConfigError(f"{label}: a name is letters, digits, - _ and . (e.g. dream-of-the-day).")
        if schedule.name in seen:
            raise ConfigError(f"Two schedules are called {schedule.name!r}; give each its own name.")
        seen.add(schedule.name)
        try:
            time_zone(schedule.timezone)
        except ConfigError as error:
            raise ConfigError(f"{label}: {error}") from None
        cron_trigger(schedule)
        if schedule.source not in SCHEDULE_SOURCES:
            close = difflib.get_close_matches(schedule.source, SCHEDULE_SOURCES, n=1)
            hint = f"Did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"{label}: there is no source {schedule.source!r}. {hint}Sources: {', '.join(SCHEDULE_SOURCES)}."
            )
        for name in schedule.destinations:
            if name not in SCHEDULE_DESTINATIONS:
                close = difflib.get_close_matches(name, SCHEDULE_DESTINATIONS, n=1)
                hint = f"Did you mean {close[0]}? " if close else ""
                raise ConfigError(
                    f"{label}: there is no destination {name!r}. {hint}"
                    f"Destinations: {', '.join(SCHEDULE_DESTINATIONS)}."
                )
        if schedule.grace_hours < 0:
            raise ConfigError(f"{label}: grace_hours cannot be negative.")
        if schedule.retries < 1 or schedule.retry_seconds < 0:
            raise ConfigError(f"{label}: retries must be at least 1 and retry_seconds at least 0.")
        if schedule.classes or schedule.deny:
            from bot.options import OptionError

            try:
                class_pool(schedule)
            except OptionError as error:
                raise ConfigError(f"{label}: {error}") from None
        if schedule.source == "photo":
            folder = Path(schedule.folder).expanduser() if schedule.folder else None
            if folder is None or not folder.is_dir():
                raise ConfigError(
                    f"{label}: the photo source needs folder = a folder of photos (got {schedule.folder!r})."
                )
            if not photos_in(folder):
                raise ConfigError(f"{label}: {folder} holds no PNG, JPEG or WebP photos.")
        for word in schedule.words:
            if not any(ch.isalnum() for ch in word) or len(word) > 12:
                raise ConfigError(f"{label}: words are at most 12 letters or digits each ({word!r} is not).")


def class_pool(schedule: ScheduleConfig) -> list[str]:
    """The class names a schedule picks from: its allow list (or all of ImageNet) without its deny list."""
    from bot.options import OptionError
    from dreamcore.classes import class_labels, find_class
    from dreamcore.errors import DreamError

    def resolve(names: tuple[str, ...]) -> list[str]:
        found = []
        for name in names:
            try:
                found.append(find_class(name).name)
            except DreamError as error:
                raise OptionError(str(error)) from None
        return found

    pool = resolve(schedule.classes) if schedule.classes else [label.name for label in class_labels()]
    denied = set(resolve(schedule.deny))
    pool = [name for name in dict.fromkeys(pool) if name not in denied]
    if not pool:
        raise OptionError("the deny list leaves no class to pick.")
    return pool


def photos_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in PHOTO_TYPES and path.is_file())


# ---------------------------------------------------------------------------------------------- time


def slot_of(when: datetime, zone: zoneinfo.ZoneInfo) -> str:
    """The run's key: the due time as a wall clock where the schedule lives (the same twice in a DST fall-back)."""
    return when.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def fire_times(trigger: Any, after: datetime, until: datetime, limit: int = 50_000) -> list[datetime]:
    """The trigger's fire times in (after, until], one per slot."""
    zone = trigger.timezone
    times: list[datetime] = []
    slots: set[str] = set()
    cursor = after + timedelta(seconds=1)
    for _ in range(limit):
        fire = trigger.get_next_fire_time(None, cursor)
        if fire is None or fire > until:
            break
        if fire < cursor:  # APScheduler can answer the fall-back hour again: step past it
            cursor += timedelta(minutes=1)
            continue
        slot = slot_of(fire, zone)
        if slot not in slots:
            slots.add(slot)
            times.append(fire)
        cursor = fire + timedelta(seconds=1)
    return times


def next_fire(trigger: Any, now: datetime) -> datetime | None:
    return trigger.get_next_fire_time(None, now)


# ---------------------------------------------------------------------------------------------- the record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule TEXT NOT NULL,
    slot TEXT NOT NULL,             -- the due time as a wall clock in the schedule's zone, or manual-<utc>
    due REAL NOT NULL,              -- the due time, seconds since the epoch
    manual INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,            -- planned, dreaming, posting, done, partial, missed, failed
    job_id TEXT,
    what TEXT NOT NULL DEFAULT '',
    caption TEXT NOT NULL DEFAULT '',
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (schedule, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_posts (
    schedule TEXT NOT NULL,
    slot TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, posting, posted, failed, skipped
    post_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (schedule, slot, destination)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_requests (
    id INTEGER PRIMARY KEY, schedule TEXT NOT NULL, slot TEXT NOT NULL, requested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_previews (
    slot TEXT PRIMARY KEY, schedule TEXT NOT NULL, state TEXT NOT NULL, next_slot TEXT, extension TEXT, data BLOB,
    caption TEXT, error TEXT, at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Run:
    schedule: str
    slot: str
    due: float
    manual: bool
    state: str
    job_id: str | None
    what: str
    caption: str
    error: str | None


@dataclass(frozen=True)
class Post:
    destination: str
    state: str
    post_id: str | None
    attempts: int
    error: str | None


class ScheduleStore:
    """The runs and posts, in the service's database (a connection of its own; the CLI reads the same file)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def run(self, schedule: str, slot: str) -> Run | None:
        row = self.db.execute(
            "SELECT schedule, slot, due, manual, state, job_id, what, caption, error FROM schedule_runs "
            "WHERE schedule = ? AND slot = ?",
            (schedule, slot),
        ).fetchone()
        return Run(*row[:3], bool(row[3]), *row[4:]) if row else None

    def claim(self, schedule: str, slot: str, due: float, *, manual: bool = False, state: str = "planned") -> Run:
        """The run's row, written once: a second claim of the same slot gets the first one's row."""
        now = time.time()
        self.db.execute(
            "INSERT OR IGNORE INTO schedule_runs (schedule, slot, due, manual, state, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (schedule, slot, due, int(manual), state, now, now),
        )
        run = self.run(schedule, slot)
        assert run is not None
        return run

    def update_run(self, schedule: str, slot: str, **values: Any) -> None:
        assert set(values) <= {"state", "job_id", "what", "caption", "error"}, values
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.db.execute(
            f"UPDATE schedule_runs SET {assignments}, updated_at = ? WHERE schedule = ? AND slot = ?",
            (*values.values(), time.time(), schedule, slot),
        )

    def last_due(self, schedule: str) -> float | None:
        row = self.db.execute(
            "SELECT MAX(due) FROM schedule_runs WHERE schedule = ? AND manual = 0", (schedule,)
        ).fetchone()
        return row[0]

    def unfinished(self, schedule: str) -> list[Run]:
        rows = self.db.execute(
            "SELECT slot FROM schedule_runs WHERE schedule = ? AND state NOT IN (?, ?, ?, ?) ORDER BY due",
            (schedule, *FINAL_RUN_STATES),
        ).fetchall()
        return [run for (slot,) in rows if (run := self.run(schedule, slot)) is not None]

    def runs(self, schedule: str, limit: int = 10) -> list[Run]:
        rows = self.db.execute(
            "SELECT slot FROM schedule_runs WHERE schedule = ? ORDER BY due DESC LIMIT ?", (schedule, limit)
        ).fetchall()
        return [run for (slot,) in rows if (run := self.run(schedule, slot)) is not None]

    def post(self, schedule: str, slot: str, destination: str) -> Post:
        self.db.execute(
            "INSERT OR IGNORE INTO schedule_posts (schedule, slot, destination, state, updated_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (schedule, slot, destination, time.time()),
        )
        row = self.db.execute(
            "SELECT destination, state, post_id, attempts, error FROM schedule_posts "
            "WHERE schedule = ? AND slot = ? AND destination = ?",
            (schedule, slot, destination),
        ).fetchone()
        return Post(*row)

    def posts(self, schedule: str, slot: str) -> list[Post]:
        rows = self.db.execute(
            "SELECT destination, state, post_id, attempts, error FROM schedule_posts "
            "WHERE schedule = ? AND slot = ? ORDER BY destination",
            (schedule, slot),
        ).fetchall()
        return [Post(*row) for row in rows]

    def update_post(self, schedule: str, slot: str, destination: str, *, attempt: bool = False, **values: Any) -> None:
        assert set(values) <= {"state", "post_id", "error"}, values
        assignments = "".join(f"{name} = ?, " for name in values)
        self.db.execute(
            f"UPDATE schedule_posts SET {assignments}attempts = attempts + ?, updated_at = ? "
            "WHERE schedule = ? AND slot = ? AND destination = ?",
            (*values.values(), int(attempt), time.time(), schedule, slot, destination),
        )

    def last_posts(self, schedule: str) -> dict[str, Post]:
        """The newest result per destination."""
        rows = self.db.execute(
            "SELECT p.destination, p.state, p.post_id, p.attempts, p.error FROM schedule_posts p "
            "JOIN schedule_runs r ON r.schedule = p.schedule AND r.slot = p.slot WHERE p.schedule = ? "
            "ORDER BY r.due",
            (schedule,),
        ).fetchall()
        return {row[0]: Post(*row) for row in rows}

    def latest_posted(self, destination: str) -> Run | None:
        row = self.db.execute(
            "SELECT r.schedule, r.slot FROM schedule_posts p JOIN schedule_runs r "
            "ON r.schedule = p.schedule AND r.slot = p.slot WHERE p.destination = ? AND p.state = 'posted' "
            "ORDER BY p.updated_at DESC LIMIT 1",
            (destination,),
        ).fetchone()
        return self.run(*row) if row else None

    # manual runs asked for by the command line, and the service's sign of life
    def request(self, schedule: str, slot: str) -> None:
        self.db.execute(
            "INSERT INTO schedule_requests (schedule, slot, requested_at) VALUES (?, ?, ?)",
            (schedule, slot, time.time()),
        )

    def take_requests(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT id, schedule, slot FROM schedule_requests ORDER BY id").fetchall()
        for row in rows:
            self.db.execute("DELETE FROM schedule_requests WHERE id = ?", (row[0],))
        return [(schedule, slot) for _, schedule, slot in rows]

    def save_preview(self, slot: str, schedule: str, picture: Picture | None, error: str | None = None) -> None:
        """A preview the command line asked the running service for (kept until the next one)."""
        self.db.execute("DELETE FROM schedule_previews WHERE slot != ?", (slot,))
        self.db.execute(
            "INSERT OR REPLACE INTO schedule_previews VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                slot,
                schedule,
                "failed" if picture is None else "done",
                picture.slot if picture else None,
                picture.extension if picture else None,
                picture.data if picture else None,
                picture.caption if picture else None,
                error,
                time.time(),
            ),
        )

    def preview(self, slot: str) -> tuple[Picture | None, str | None] | None:
        """(picture, error) once the service has made it; None while it has not."""
        row = self.db.execute(
            "SELECT schedule, state, next_slot, extension, data, caption, error FROM schedule_previews WHERE slot = ?",
            (slot,),
        ).fetchone()
        if row is None:
            return None
        schedule, state, next_slot, extension, data, caption, error = row
        if state != "done":
            return None, error
        return Picture(schedule, next_slot, data, extension, caption), None

    def beat(self) -> None:
        self.db.execute("INSERT OR REPLACE INTO schedule_heartbeat VALUES (1, ?)", (time.time(),))

    def service_running(self, within: float = 15.0) -> bool:
        row = self.db.execute("SELECT at FROM schedule_heartbeat WHERE id = 1").fetchone()
        return row is not None and time.time() - row[0] < within

    def stopped(self) -> None:
        self.db.execute("DELETE FROM schedule_heartbeat")


# ---------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Plan:
    """What a run makes: a new dream (``command``, maybe with a photo), or an existing shared one (``job_id``)."""

    what: str
    command: Command | None = None
    image: bytes | None = None
    job_id: str | None = None


class NothingToPost(Exception):
    """A source with nothing to offer today (no dream was shared in the last day)."""


def plan(schedule: ScheduleConfig, slot: str, due: float, shared: Callable[[float], list[str]]) -> Plan:
    """The run's picture, chosen by a random generator seeded with the run's key: a restart chooses the same."""
    from bot.options import Mode, OptionError, build_command

    rng = random.Random(f"{schedule.name}|{slot}")
    options: dict[str, Any] = {"seed": rng.randrange(2**31)}
    if schedule.network:
        options["network"] = schedule.network
    if schedule.source == "shared":
        found = shared(due - 86400)
        if not found:
            raise NothingToPost("no one shared a dream in the last day")
        return Plan("the most-liked dream people shared today", job_id=found[0])
    if schedule.source == "photo":
        photo = rng.choice(photos_in(Path(schedule.folder).expanduser()))
        from dreamcore.settings import PRESETS

        look = rng.choice(sorted(PRESETS))
        command = build_command(Mode.DREAM, "", {**options, "preset": look})
        return Plan(f"{photo.stem} dreamed with the {look} look", command, photo.read_bytes())
    pool = class_pool(schedule)
    for _ in range(20):  # a few class names are ambiguous on their own (two cranes): pick again
        try:
            return _drawing(schedule, rng, pool, options, slot)
        except OptionError:
            continue
    raise NothingToPost(f"no usable class in the list of schedule {schedule.name!r}")


def _drawing(schedule: ScheduleConfig, rng: random.Random, pool: list[str], options: dict, slot: str) -> Plan:
    from bot.options import Mode, build_command

    first = rng.choice(pool)
    if schedule.source == "class":
        return Plan(f"a {first}", build_command(Mode.VISUALIZE, first, options))
    if schedule.source == "mix":
        second = rng.choice([name for name in pool if name != first] or pool)
        return Plan(f"a {first} and a {second}", build_command(Mode.MIX, f"{first} + {second}", options))
    if schedule.source == "path":
        from dreamcore.shapes import PATH_SHAPES

        shape = rng.choice(PATH_SHAPES)
        return Plan(f"a {first} drawn along a {shape}", build_command(Mode.PATH, first, {**options, "shape": shape}))
    day = datetime.strptime(slot[:10], "%Y-%m-%d") if slot[:4].isdigit() else datetime.now(UTC)
    text = rng.choice(schedule.words) if schedule.words else day.strftime("%d %b").upper()
    return Plan(f"{text} in letters made of {first}", build_command(Mode.LETTERS, text, {**options, "fill": first}))


def caption_of(what: str, settings: str, public_url: str) -> str:
    """What it is (classes, network, layer, look) and how to ask for your own."""
    where = f" or at {public_url}" if public_url else ""
    return f"Dream of the day: {what} ({settings}). Ask for your own: mention DreamBot with a photo{where}."


# ---------------------------------------------------------------------------------------------- the web gallery


class WebGallery:
    """The web page as a destination: its gallery shows the latest dream of the day first (the post is the record)."""

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        return f"web:{key}"


# ---------------------------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class Picture:
    """A preview: the picture a run would post, without posting it."""

    schedule: str
    slot: str
    data: bytes
    extension: str
    caption: str


class DreamScheduler:
    """Runs the configured schedules in the service's loop and posts each run once to every destination."""

    def __init__(
        self,
        service: Any,
        schedules: tuple[ScheduleConfig, ...],
        destinations: Mapping[str, OwnAccount],
        *,
        public_url: str = "",
        sleep: Callable[[float], Any] = asyncio.sleep,
        poll_seconds: float = 2.0,
    ) -> None:
        self.service = service
        self.schedules = {schedule.name: schedule for schedule in schedules}
        self.triggers = {schedule.name: cron_trigger(schedule) for schedule in schedules}
        self.destinations = dict(destinations)
        self.public_url = public_url
        self.sleep = sleep
        self.poll_seconds = poll_seconds
        self.store = ScheduleStore(service.config.database_path)
        self.aps: Any = None
        self.started_at = time.time()
        self._locks = {name: asyncio.Lock() for name in self.schedules}
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self.fired = asyncio.Event()  # set whenever a tick finished (tests wait for it, not for a guess)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Catch up what the database says is due, then let APScheduler wake us at each fire time."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.started_at = time.time()
        self.aps = AsyncIOScheduler(timezone=UTC)
        for name, trigger in self.triggers.items():
            # coalesce and no misfire limit: a late wake-up still ticks once; the database decides what is due
            self.aps.add_job(
                self._fire, trigger, args=[name], id=name, coalesce=True, max_instances=1, misfire_grace_time=None
            )
        self.aps.start()
        self.store.beat()
        for name in self.schedules:
            self._spawn(self.tick(name))
        self._poller = asyncio.create_task(self._poll_requests(), name="schedule-requests")

    async def close(self) -> None:
        if self.aps is not None and self.aps.running:
            self.aps.shutdown(wait=False)
        tasks = [*self._tasks, *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(sqlite3.Error):
            self.store.stopped()
        self.store.close()

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _fire(self, name: str) -> None:
        await self.tick(name)

    async def _poll_requests(self) -> None:
        """Manual runs the command line asked for while the service runs; and a heartbeat it can see."""
        while True:
            self.store.beat()
            for name, slot in self.store.take_requests():
                if name in self.schedules and slot.startswith("preview-"):
                    self._spawn(self._preview_for_command_line(name, slot))
                elif name in self.schedules:
                    self._spawn(self.run_now(name, slot))
            await asyncio.sleep(self.poll_seconds)

    async def _preview_for_command_line(self, name: str, slot: str) -> None:
        try:
            self.store.save_preview(slot, name, await self.preview(name))
        except (QueueError, ConfigError) as error:
            self.store.save_preview(slot, name, None, str(error))
        except Exception as error:
            log.exception("schedule %s: the preview failed", name)
            self.store.save_preview(slot, name, None, f"the preview failed ({type(error).__name__}); see the log")

    # ------------------------------------------------------------------ what is due

    def due(self, name: str, now: float | None = None) -> list[tuple[str, float]]:
        """Slots to run now; missed ones past the grace period (or older than the newest) are recorded as missed."""
        schedule, trigger = self.schedules[name], self.triggers[name]
        now_dt = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        last = self.store.last_due(name)
        since = datetime.fromtimestamp(last if last is not None else self.started_at - 1, UTC)
        since = max(since, now_dt - LOOKBACK)
        fires = [
            f for f in fire_times(trigger, since, now_dt) if self.store.run(name, slot_of(f, trigger.timezone)) is None
        ]
        if not fires:
            return []
        *older, newest = fires
        for fire in older:
            self.store.claim(name, slot_of(fire, trigger.timezone), fire.timestamp(), state="missed")
        slot = slot_of(newest, trigger.timezone)
        if (now_dt - newest).total_seconds() > schedule.grace_hours * 3600:
            self.store.claim(name, slot, newest.timestamp(), state="missed")
            log.warning("schedule %s: the run due %s was missed (past the grace period)", name, slot)
            return []
        if older:
            log.info("schedule %s: %d missed runs recorded; catching up the newest (%s) once", name, len(older), slot)
        return [(slot, newest.timestamp())]

    async def tick(self, name: str) -> None:
        """Run what is due for one schedule, and carry on runs a restart interrupted. Safe to call any time."""
        try:
            async with self._locks[name]:
                for run in self.store.unfinished(name):
                    await self._run(name, run.slot, run.due, manual=run.manual)
                for slot, due in self.due(name):
                    await self._run(name, slot, due)
        except Exception:
            log.exception("schedule %s: the run failed", name)
        finally:
            self.fired.set()

    async def run_now(self, name: str, slot: str | None = None) -> Run:
        """A manual run (``dreambot schedule run``): posted now, recorded like the others but not as a due slot."""
        schedule = self.schedule(name)
        slot = slot or f"manual-{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"
        async with self._locks[schedule.name]:
            return await self._run(schedule.name, slot, time.time(), manual=True)

    def schedule(self, name: str) -> ScheduleConfig:
        if name not in self.schedules:
            known = ", ".join(self.schedules) or "none"
            raise ConfigError(f"There is no schedule {name!r}; the schedules are: {known}.")
        return self.schedules[name]

    # ------------------------------------------------------------------ one run

    async def _run(self, name: str, slot: str, due: float, *, manual: bool = False) -> Run:
        schedule = self.schedules[name]
        run = self.store.claim(name, slot, due, manual=manual)
        if run.state in FINAL_RUN_STATES:
            return run
        try:
            view = await self._dream(schedule, run)
        except (NothingToPost, QueueError) as error:  # nothing shared today; the dream was removed meanwhile
            log.warning("schedule %s: nothing to post for %s: %s", name, slot, error)
            self.store.update_run(name, slot, state="failed", error=str(error))
            return self.store.claim(name, slot, due)
        if view.state != "done" or view.result is None:
            log.warning("schedule %s: the dream for %s did not finish: %s", name, slot, view.error or view.state)
            self.store.update_run(name, slot, state="failed", error=view.error or f"the dream was {view.state}")
            return self.store.claim(name, slot, due)
        run = self.store.claim(name, slot, due)
        caption = run.caption or caption_of(run.what, view.result.get("caption", ""), self.public_url)
        self.store.update_run(name, slot, state="posting", caption=caption)
        key = view.result["key"]
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, key)
        extension = key.rsplit(".", 1)[-1]
        alt = f"DeepDream picture: {run.what} ({view.result.get('caption', '')})"
        names = list(dict.fromkeys(schedule.destinations))
        for destination in names:
            post = self.store.post(name, slot, destination)
            if post.state == "pending" and destination not in self.destinations:
                self.store.update_post(name, slot, destination, state="skipped", error="not set up")
        waiting = [p for p in self.store.posts(name, slot) if p.state in ("pending", "posting")]
        await asyncio.gather(
            *(self._post(schedule, slot, p.destination, data, extension, caption, alt) for p in waiting)
        )
        states = {p.state for p in self.store.posts(name, slot)}
        self.store.update_run(name, slot, state="partial" if "failed" in states else "done")
        return self.store.claim(name, slot, due)

    async def _dream(self, schedule: ScheduleConfig, run: Run) -> Any:
        """The run's finished job: queued once (the job id is recorded), waited for again after a restart."""
        from bot.requests import Destination, DreamRequest, Requester

        job_id = run.job_id
        if job_id is None:
            chosen = plan(schedule, run.slot, run.due, self._shared)
            if chosen.job_id is not None:
                job_id = chosen.job_id
            else:
                request = DreamRequest(
                    chosen.command,
                    Requester(PLATFORM, schedule.name, schedule.name),
                    Destination(PLATFORM, {"schedule": schedule.name, "slot": run.slot, "public": False}),
                    image=chosen.image,
                )
                job_id = (await self.service.submit(request, Priority.SCHEDULED)).id
            self.store.update_run(schedule.name, run.slot, state="dreaming", job_id=job_id, what=chosen.what)
        async with contextlib.aclosing(self.service.subscribe(job_id)) as views:
            async for view in views:
                if view.finished:
                    return view
        raise QueueError("the scheduled dream went away")

    def _shared(self, since: float) -> list[str]:
        return self.service.sharing.most_liked(since)

    async def _post(
        self, schedule: ScheduleConfig, slot: str, destination: str, data: bytes, extension: str, caption: str, alt: str
    ) -> None:
        """One destination: recorded before and after; retried with backoff; the others never wait for it."""
        from bot.backoff import Backoff
        from bot.media import DESTINATION_LIMITS, fit_result

        name = schedule.name
        account = self.destinations[destination]
        limit = DESTINATION_LIMITS.get(destination) or OWN_LIMITS.get(destination, 5 * 10**6)
        fitted, fitted_extension = await asyncio.get_running_loop().run_in_executor(
            None, fit_result, data, extension, limit
        )
        backoff = Backoff(first=schedule.retry_seconds, cap=max(schedule.retry_seconds, 3600.0))
        for attempt in range(1, schedule.retries + 1):
            self.store.update_post(name, slot, destination, state="posting", attempt=True)
            try:
                post_id = await account.post_to_own_account(fitted, fitted_extension, caption, alt, f"{name}/{slot}")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reason = str(error) or type(error).__name__
                self.store.update_post(name, slot, destination, error=reason[:500])
                if attempt == schedule.retries:
                    log.warning(
                        "schedule %s: %s gave up after %d tries for %s: %s", name, destination, attempt, slot, reason
                    )
                    self.store.update_post(name, slot, destination, state="failed")
                    return
                wait = backoff.next_wait()
                log.warning(
                    "schedule %s: %s failed for %s (%s); trying again in %.0f s", name, destination, slot, reason, wait
                )
                await self.sleep(wait)
                continue
            self.store.update_post(name, slot, destination, state="posted", post_id=str(post_id), error=None)
            log.info("schedule %s: posted %s to %s (%s)", name, slot, destination, post_id)
            return

    # ------------------------------------------------------------------ previews, the gallery, status

    def next_slot(self, name: str) -> tuple[str, float]:
        trigger = self.triggers[self.schedule(name).name]
        fire = next_fire(trigger, datetime.now(UTC))
        if fire is None:
            raise ConfigError(f"schedule {name!r} never runs again.")
        return slot_of(fire, trigger.timezone), fire.timestamp()

    async def preview(self, name: str | None = None) -> Picture:
        """The next run's picture, made now (through the queue) and not posted; the same seed the run will use."""
        from bot.requests import Destination, DreamRequest, Requester

        name = name or next(iter(self.schedules), "")
        schedule = self.schedule(name)
        slot, due = self.next_slot(schedule.name)
        chosen = plan(schedule, slot, due, self._shared)
        if chosen.job_id is not None:
            job_id = chosen.job_id
        else:
            request = DreamRequest(
                chosen.command,
                Requester(PLATFORM, f"{schedule.name}-preview", f"{schedule.name} preview"),
                Destination(PLATFORM, {"schedule": schedule.name, "preview": True, "public": False}),
                image=chosen.image,
            )
            job_id = (await self.service.submit(request, Priority.SCHEDULED)).id
        async with contextlib.aclosing(self.service.subscribe(job_id)) as views:
            async for view in views:
                if view.finished:
                    break
        if view.state != "done" or view.result is None:
            raise QueueError(view.error or "The preview could not be made; see the log.")
        key = view.result["key"]
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, key)
        caption = caption_of(chosen.what, view.result.get("caption", ""), self.public_url)
        return Picture(schedule.name, slot, data, key.rsplit(".", 1)[-1], caption)

    async def featured(self) -> dict[str, Any] | None:
        """The latest dream of the day posted to the web page, for the top of its gallery."""
        run = self.store.latest_posted("web")
        if run is None or run.job_id is None:
            return None
        try:
            view = await self.service.view(run.job_id)
        except QueueError:
            return None  # expired with the other old results
        return {"view": view, "schedule": run.schedule, "caption": run.caption}

    def status(self) -> dict[str, Any]:
        return {"schedules": report(self.store, tuple(self.schedules.values()), set(self.destinations))}


def report(store: ScheduleStore, schedules: tuple[ScheduleConfig, ...], set_up: set[str] | None = None) -> list[dict]:
    """Per schedule: when it runs next, its last run, the last result per destination (problems included)."""
    rows = []
    now = datetime.now(UTC)
    for schedule in schedules:
        trigger = cron_trigger(schedule)
        fire = next_fire(trigger, now)
        runs = store.runs(schedule.name, limit=1)
        last = runs[0] if runs else None
        posts = store.last_posts(schedule.name)
        rows.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "source": schedule.source,
                "next_run": fire.astimezone(trigger.timezone).isoformat() if fire else None,
                "last_run": None if last is None else {"slot": last.slot, "state": last.state, "error": last.error},
                "destinations": {
                    name: (
                        {
                            "state": posts[name].state,
                            "post_id": posts[name].post_id,
                            "error": posts[name].error,
                            "attempts": posts[name].attempts,
                        }
                        if name in posts
                        else {"state": "not yet" if set_up is None or name in set_up else "not set up"}
                    )
                    for name in dict.fromkeys(schedule.destinations)
                },
            }
        )
    return rows


def problems(rows: list[dict]) -> list[str]:
    """Sentences for `dreambot status`: destinations whose last post failed."""
    found = []
    for row in rows:
        for name, post in row["destinations"].items():
            if post["state"] == "failed":
                found.append(
                    f"schedule {row['name']}: posting to {name} failed: {post.get('error') or 'unknown error'}"
                )
    return found
