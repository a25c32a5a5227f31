"""Scheduled posts: the real APScheduler in the service's loop, frozen time (time-machine), the real SQLite record.

The destinations here are small recorders with the adapters' own-account contract (idempotent per key); the
end-to-end test with the fake Discord, the fake X and the web gallery is in tests/adapters/test_schedule_posts.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from waiting import until

from bot.config import Config, ConfigError, QueueConfig, ScheduleConfig, WorkerConfig, load_config
from bot.engine import NullEngine
from bot.schedule import DreamScheduler, ScheduleStore, cron_day_of_week, cron_trigger, fire_times, slot_of
from bot.service import DreamService


class Recorder:
    """A destination with the adapters' contract: one post per key, however often it is called."""

    def __init__(self, name: str, failures: int = 0) -> None:
        self.name = name
        self.failures = failures  # the next this many calls fail (an outage)
        self.calls = 0
        self.posts: dict[str, tuple[bytes, str, str]] = {}
        self.gate: asyncio.Event | None = None  # when set up, a post waits here (a restart in the middle)
        self.waiting = asyncio.Event()

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        self.calls += 1
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError(f"{self.name} is down")
        self.posts.setdefault(key, (image, text, alt))
        return f"{self.name}-{list(self.posts).index(key)}"


def make_config(tmp_path: Path, **schedule: object) -> Config:
    values: dict = {"destinations": ("x", "web", "discord"), "retry_seconds": 0.01, **schedule}
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        schedules=(ScheduleConfig(**values),),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(config: Config, destinations: dict) -> AsyncIterator[DreamScheduler]:
    service = await DreamService.open(config, NullEngine())
    service.start()
    scheduler = DreamScheduler(service, config.schedules, destinations, poll_seconds=0.05)
    try:
        await scheduler.start()
        yield scheduler
    finally:
        await scheduler.close()
        await service.close()


def runs(config: Config, name: str = "dream-of-the-day") -> list[tuple[str, str]]:
    store = ScheduleStore(config.database_path)
    try:
        return sorted((run.slot, run.state) for run in store.runs(name, limit=100))
    finally:
        store.close()


def arrive(traveller: time_machine.Traveller, scheduler: DreamScheduler, when: str) -> None:
    """Jump the frozen clock to just before a fire time, and let APScheduler look at the clock again.

    Started well before, so a slow start never passes the fire time; the scheduler's own timer then fires.
    """
    traveller.move_to(at(when))
    scheduler.aps.wakeup()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)


# ---------------------------------------------------------------------------------------------- firing


@pytest.mark.asyncio
async def test_the_trigger_fires_and_each_destination_gets_exactly_one_post(tmp_path: Path) -> None:
    # any platform plugs in by name with the own-account method: here Mastodon and Bluesky stand-ins too
    config = make_config(tmp_path, destinations=("x", "web", "discord", "mastodon", "bluesky"))
    x, discord, mastodon, bluesky = Recorder("x"), Recorder("discord"), Recorder("mastodon"), Recorder("bluesky")
    accounts = {"x": x, "discord": discord, "mastodon": mastodon, "bluesky": bluesky}
    with time_machine.travel(at("2026-03-10T08:50:00"), tick=True) as traveller:
        async with running(config, accounts) as scheduler:
            assert runs(config) == []  # nothing due at start
            arrive(traveller, scheduler, "2026-03-10T08:59:59.8")
            await until(lambda: runs(config) == [("2026-03-10T09:00", "done")])
            scheduler.fired.clear()
            await scheduler.tick("dream-of-the-day")  # a second look at the same time posts nothing more
    assert list(x.posts) == ["dream-of-the-day/2026-03-10T09:00"] and x.calls == 1
    for account in (discord, mastodon, bluesky):
        assert list(account.posts) == ["dream-of-the-day/2026-03-10T09:00"] and account.calls == 1
    image, text, alt = x.posts["dream-of-the-day/2026-03-10T09:00"]
    assert image.startswith(b"\x89PNG") and text.startswith("Dream of the day: a ") and "Ask for your own" in text
    assert alt.startswith("DeepDream picture: a ")
    store = ScheduleStore(config.database_path)
    posts = {p.destination: (p.state, p.post_id) for p in store.posts("dream-of-the-day", "2026-03-10T09:00")}
    store.close()
    # a destination that is not set up (here the web page) is skipped and says so
    assert posts == {
        "x": ("posted", "x-0"),
        "discord": ("posted", "discord-0"),
        "mastodon": ("posted", "mastodon-0"),
        "bluesky": ("posted", "bluesky-0"),
        "web": ("skipped", None),
    }


@pytest.mark.asyncio
async def test_a_restart_in_the_middle_of_a_run_completes_without_duplicates(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    x, discord = Recorder("x"), Recorder("discord")
    discord.gate = asyncio.Event()  # Discord's post hangs: the bot stops while it does
    key = "dream-of-the-day/2026-03-10T09:00"
    with time_machine.travel(at("2026-03-10T08:50:00"), tick=True) as traveller:
        async with running(config, {"x": x, "discord": discord}) as scheduler:
            arrive(traveller, scheduler, "2026-03-10T08:59:59.8")
            await until(lambda: key in x.posts and discord.waiting.is_set())
        assert runs(config) == [("2026-03-10T09:00", "posting")]
        discord.gate = None
        async with running(config, {"x": x, "discord": discord}):
            await until(lambda: runs(config) == [("2026-03-10T09:00", "done")])
    assert x.calls == 1  # posted before the stop: not asked again
    assert discord.calls == 2 and list(discord.posts) == [key]  # asked again with the same key: posted once


@pytest.mark.asyncio
async def test_two_missed_days_are_caught_up_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    x = Recorder("x")
    with time_machine.travel(at("2026-03-10T08:50:00"), tick=True) as traveller:
        async with running(config, {"x": x}) as scheduler:
            arrive(traveller, scheduler, "2026-03-10T08:59:59.8")
            await until(lambda: runs(config) == [("2026-03-10T09:00", "done")])
    # down on the 11th and the 12th; back at 10:00 on the 12th, within the six hours' grace
    with time_machine.travel(at("2026-03-12T10:00:00"), tick=True):
        async with running(config, {"x": x}):
            await until(lambda: ("2026-03-12T09:00", "done") in runs(config))
    assert runs(config) == [
        ("2026-03-10T09:00", "done"),
        ("2026-03-11T09:00", "missed"),
        ("2026-03-12T09:00", "done"),
    ]
    assert list(x.posts) == ["dream-of-the-day/2026-03-10T09:00", "dream-of-the-day/2026-03-12T09:00"]
    # past the grace period a run is recorded as missed, not posted late
    with time_machine.travel(at("2026-03-13T16:00:00"), tick=True):
        async with running(config, {"x": x}) as scheduler:
            await until(lambda: ("2026-03-13T09:00", "missed") in runs(config))
            await scheduler.tick("dream-of-the-day")
    assert len(x.posts) == 2


@pytest.mark.asyncio
async def test_daylight_saving_neither_skips_nor_doubles(tmp_path: Path) -> None:
    # 02:30 in Berlin: the clock skips it in March and shows it twice in October
    berlin = ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin")
    trigger = cron_trigger(berlin)
    march = fire_times(trigger, at("2026-03-27T12:00:00"), at("2026-03-31T12:00:00"))
    october = fire_times(trigger, at("2026-10-23T12:00:00"), at("2026-10-27T12:00:00"))
    assert [f.astimezone(UTC).strftime("%d %H:%M") for f in march] == ["28 01:30", "29 01:30", "30 00:30", "31 00:30"]
    assert [f.astimezone(UTC).strftime("%d %H:%M") for f in october] == ["24 00:30", "25 00:30", "26 01:30", "27 01:30"]
    nine = fire_times(cron_trigger(replace(berlin, cron="0 9 * * *")), at("2026-03-28T00:00"), at("2026-03-30T00:00"))
    assert [slot_of(f, trigger.timezone) for f in nine] == ["2026-03-28T09:00", "2026-03-29T09:00"]

    # and the real scheduler, which wakes at both 02:30s of 25 October: one post
    config = make_config(tmp_path, cron="30 2 * * *", timezone="Europe/Berlin")
    x = Recorder("x")
    with time_machine.travel(at("2026-10-25T00:20:00"), tick=True) as traveller:
        async with running(config, {"x": x}) as scheduler:
            arrive(traveller, scheduler, "2026-10-25T00:29:59.8")
            await until(lambda: runs(config) == [("2026-10-25T02:30", "done")])
            scheduler.fired.clear()
            arrive(traveller, scheduler, "2026-10-25T01:29:59.8")  # the clock went back: 02:30 again
            await asyncio.wait_for(scheduler.fired.wait(), 10)
            assert runs(config) == [("2026-10-25T02:30", "done")]
            arrive(traveller, scheduler, "2026-10-26T01:29:59.8")  # the next day, in winter time
            await until(lambda: ("2026-10-26T02:30", "done") in runs(config))
    assert list(x.posts) == ["dream-of-the-day/2026-10-25T02:30", "dream-of-the-day/2026-10-26T02:30"]


@pytest.mark.asyncio
async def test_an_outage_is_retried_and_reported_while_the_others_post(tmp_path: Path) -> None:
    config = make_config(tmp_path, retries=3)
    x, flaky, down = Recorder("x"), Recorder("discord", failures=2), Recorder("web", failures=99)
    with time_machine.travel(at("2026-03-10T08:50:00"), tick=True) as traveller:
        async with running(config, {"x": x, "discord": flaky, "web": down}) as scheduler:
            arrive(traveller, scheduler, "2026-03-10T08:59:59.8")
            await until(lambda: runs(config) == [("2026-03-10T09:00", "partial")])
            status = scheduler.status()
    assert len(x.posts) == 1 and x.calls == 1
    assert len(flaky.posts) == 1 and flaky.calls == 3  # two failures, then the post
    assert down.posts == {} and down.calls == 3
    (row,) = status["schedules"]
    assert row["destinations"]["x"]["state"] == "posted"
    assert row["destinations"]["discord"] == {"state": "posted", "post_id": "discord-0", "error": None, "attempts": 3}
    assert row["destinations"]["web"]["state"] == "failed" and row["destinations"]["web"]["error"] == "web is down"
    from bot.schedule import problems

    assert problems(status["schedules"]) == ["schedule dream-of-the-day: posting to web failed: web is down"]


# ---------------------------------------------------------------------------------------------- configuration


def test_cron_day_numbers_mean_what_cron_means() -> None:
    assert cron_day_of_week("0") == "sun" and cron_day_of_week("7") == "sun"
    assert cron_day_of_week("1-5") == "mon,tue,wed,thu,fri"
    assert cron_day_of_week("0,6") == "sun,sat" and cron_day_of_week("mon-fri") == "mon-fri"
    sundays = fire_times(cron_trigger(ScheduleConfig(cron="0 9 * * 0")), at("2026-03-01T10:00"), at("2026-03-31T00:00"))
    assert [f.strftime("%a %d") for f in sundays] == ["Sun 08", "Sun 15", "Sun 22", "Sun 29"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('cron = "0 9 * *"', "cron '0 9 * *' needs five fields (minute hour day month day-of-week)"),
        ('cron = "0 25 * * *"', "cron '0 25 * * *' is not valid"),
        ('cron = "0 9 * * 8"', "day-of-week '8' must be 0-7 (0 and 7 are Sunday)"),
        ('timezone = "Europe/Berln"', "'Europe/Berln' is not a time zone I know. Did you mean Europe/Berlin"),
        ('source = "clas"', "there is no source 'clas'. Did you mean class?"),
        ('destinations = ["x", "myspace"]', "there is no destination 'myspace'."),
        ('source = "photo"', "the photo source needs folder = a folder of photos"),
        ('classes = ["bananna"]', "bananna"),
        ("colour = 1", "Unknown key 'colour' in schedule 'daily'."),
    ],
)
def test_bad_schedules_are_refused_at_start_with_sentences(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "dreambot.toml"
    path.write_text(f'[[schedule]]\nname = "daily"\n{table}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert message in str(error.value)
    assert str(error.value).startswith(("schedule 'daily'", "Unknown key"))


def test_schedules_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dreambot.toml"
    path.write_text(
        '[[schedule]]\nname = "weekly-mix"\ncron = "0 18 * * fri"\ntimezone = "Europe/Berlin"\nsource = "mix"\n'
        'classes = ["banana", "goldfish", "volcano"]\ndestinations = ["web"]\n',
        encoding="utf-8",
    )
    (weekly,) = load_config(path, environ={}).schedules
    assert (weekly.name, weekly.source, weekly.destinations) == ("weekly-mix", "mix", ("web",))
    assert load_config(environ={}).schedules[0].name == "dream-of-the-day"  # the default
    path.write_text("schedule = []\n", encoding="utf-8")
    assert load_config(path, environ={}).schedules == ()


# ---------------------------------------------------------------------------------------------- sources


def test_sources_choose_the_same_picture_for_a_run_and_another_for_the_next() -> None:
    from bot.schedule import plan

    def nothing_shared(_since: float) -> list[str]:
        return []

    mix = ScheduleConfig(source="mix", classes=("banana", "goldfish", "volcano"), deny=("volcano",))
    first = plan(mix, "2026-03-10T09:00", 0.0, nothing_shared)
    assert first == plan(mix, "2026-03-10T09:00", 0.0, nothing_shared)  # a restart picks the same
    assert first.command is not None and first.command.mode == "mix"
    assert sorted(first.command.subject.split(" + ")) == ["banana", "goldfish"]  # never the denied volcano
    seeds = {plan(mix, f"2026-03-{day:02d}T09:00", 0.0, nothing_shared).command.options["seed"] for day in range(1, 9)}
    assert len(seeds) == 8
    letters = plan(ScheduleConfig(source="letters", classes=("goldfish",)), "2026-03-10T09:00", 0.0, nothing_shared)
    assert letters.command is not None and (letters.command.subject, letters.command.options["fill"]) == (
        "10 MAR",
        "goldfish",
    )
    assert letters.what == "10 MAR in letters made of goldfish"
    path = plan(ScheduleConfig(source="path", classes=("jellyfish",)), "2026-03-10T09:00", 0.0, nothing_shared)
    assert path.command is not None and path.command.options["shape"] in ("line", "circle", "spiral", "wave")
    from bot.schedule import NothingToPost

    with pytest.raises(NothingToPost, match="no one shared a dream in the last day"):
        plan(ScheduleConfig(source="shared"), "2026-03-10T09:00", 0.0, nothing_shared)


@pytest.mark.asyncio
async def test_a_photo_from_the_folder_is_dreamed_with_a_random_look_at_the_scheduled_priority(tmp_path: Path) -> None:
    from bot.jobqueue import Priority
    from dreamcore.settings import PRESETS

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "chelsea.png").write_bytes((Path(__file__).parent / "data" / "chelsea.png").read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    config = make_config(tmp_path, source="photo", folder=str(folder))
    x = Recorder("x")
    async with running(config, {"x": x}) as scheduler:
        run = await scheduler.run_now("dream-of-the-day")
        job = await scheduler.service.queue.get(run.job_id)
        request = await scheduler.service.request_of(run.job_id)
    assert run.state == "done" and run.what.startswith("chelsea dreamed with the ")
    assert job.priority == Priority.SCHEDULED  # behind people's requests
    assert request.command.mode == "dream" and request.command.options["preset"] in PRESETS
    assert request.image_key is not None and len(x.posts) == 1
