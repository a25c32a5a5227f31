"""The dream of the day end to end: the real scheduler (frozen time), the real Discord and X adapters against the
fake Discord and the fake X, and the web page's gallery, all wired by ``bot.app.start_schedules``.

Mastodon and Bluesky plug in the same way (``post_to_own_account`` under their platform name):
test_schedule_social.py posts through them against their fakes.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from aiohttp.test_utils import TestClient, TestServer
from fake_discord import FakeDiscord
from fake_x import KEYS, FakeX
from PIL import Image
from waiting import until

from bot.adapters.discord import DiscordAdapter
from bot.adapters.web.app import create_web_app
from bot.adapters.x import XAdapter
from bot.app import start_schedules
from bot.config import Config, MediaConfig, QueueConfig, ScheduleConfig, WorkerConfig, XKeys
from bot.engine import NullEngine, Rendered
from bot.schedule import DreamScheduler, ScheduleStore
from bot.service import DreamService

pytestmark = pytest.mark.asyncio

KEYSET = XKeys(KEYS["X_API_KEY"], KEYS["X_API_SECRET"], KEYS["X_ACCESS_TOKEN"], KEYS["X_ACCESS_TOKEN_SECRET"])
SLOT = "2026-03-10T09:00"


class Seeded(NullEngine):
    """A small picture whose colour follows the request's seed: every dream looks different."""

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        seed = int(command.options.get("seed", 0))
        picture = Image.new("RGB", (32, 24), (seed % 251, seed // 251 % 251, 90))
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        return Rendered(buffer.getvalue(), "png", 32, 24, "lite0 block9 · default look", {})


def make_config(tmp_path: Path, **schedule: object) -> Config:
    values: dict = {"destinations": ("discord", "x", "web"), "retry_seconds": 0.01, "retries": 3, **schedule}
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        media=MediaConfig(working_side=96),
        schedules=(ScheduleConfig(**values),),  # type: ignore[arg-type]
    )


@dataclass
class Bot:
    service: DreamService
    discord: DiscordAdapter
    x: XAdapter
    web: TestClient
    scheduler: DreamScheduler | None = None


@asynccontextmanager
async def dreambot(fake: FakeDiscord, config: Config, *, schedules: bool = True) -> AsyncIterator[Bot]:
    service = await DreamService.open(config, Seeded())
    service.start()
    discord = DiscordAdapter(service, fake.token, progress_every=0.05, client_options={"guild_ready_timeout": 0.05})
    x = XAdapter(service, config.x, KEYSET)
    web = TestClient(TestServer(create_web_app(service, config)))
    await web.start_server()
    bot = Bot(service, discord, x, web)
    try:
        async with fake.run_client(discord.client):
            await x.start(poll=False)
            if schedules:
                bot.scheduler = await start_schedules(service, config, {"discord": discord, "x": x})
            try:
                yield bot
            finally:
                if bot.scheduler is not None:
                    await bot.scheduler.close()
                await discord.close()
                await x.close()
    finally:
        await web.close()
        await service.close()


def run_state(config: Config, slot: str = SLOT) -> str | None:
    store = ScheduleStore(config.database_path)
    try:
        run = store.run("dream-of-the-day", slot)
        return run.state if run else None
    finally:
        store.close()


def arrive(traveller: time_machine.Traveller, bot: Bot, when: str) -> None:
    """Jump the frozen clock to just before the fire time (set-up happened well before it), and let APScheduler
    look at the clock again; its own timer then fires."""
    assert bot.scheduler is not None
    traveller.move_to(at(when))
    bot.scheduler.aps.wakeup()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def fake_x() -> FakeX:
    with FakeX() as x:
        yield x


async def set_dream_channel(fake: FakeDiscord, channel, user, guild=None) -> None:  # type: ignore[no-untyped-def]
    record = await fake.send_slash_command(
        "dreambot settings", {"dream_channel": channel}, user=user, guild=guild, channel=guild and guild.channels[0]
    )
    await record
    assert record.original is not None and record.original.content.startswith(f"Dream of the day: <#{channel.id}>")


# ---------------------------------------------------------------------------------------------- posting


async def test_the_dream_of_the_day_posts_once_to_discord_x_and_the_web_gallery(
    fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path
) -> None:
    fake = fake_discord
    config = make_config(tmp_path, source="mix", classes=("banana", "goldfish", "volcano"))
    dreams = fake.guild.channels[1]
    fake_x.fail("/2/tweets", 503, times=2)  # X is down for two tries: retried with backoff, posted once
    with time_machine.travel(at("2026-03-10T08:00:00"), tick=True) as traveller:
        async with dreambot(fake, config) as bot:
            await set_dream_channel(fake, dreams, fake.admin)
            arrive(traveller, bot, "2026-03-10T08:59:59.8")
            await until(lambda: run_state(config) == "done", timeout=20)
            assert bot.scheduler is not None
            await bot.scheduler.tick("dream-of-the-day")  # looking again posts nothing more
            gallery = await (await bot.web.get("/api/gallery")).json()
            status = await (await bot.web.get("/healthz")).json()

    (posted,) = fake.bot_messages(dreams)
    assert posted.content.startswith("Dream of the day: a ") and " and a " in posted.content
    assert "lite0 block9" in posted.content and "Ask for your own" in posted.content
    (attachment,) = posted.attachments
    assert attachment.filename == "dream.png" and attachment.data.startswith(b"\x89PNG")

    (own,) = fake_x.replies_by_bot()
    assert own.in_reply_to is None and own.text == posted.content
    assert fake_x.media[own.media_ids[0]].alt.startswith("DeepDream picture: a ")

    top = gallery["jobs"][0]
    assert top["schedule"] == "dream-of-the-day" and top["schedule_caption"] == posted.content
    assert [job["id"] for job in gallery["jobs"]].count(top["id"]) == 1
    (row,) = status["schedule"]["schedules"]
    assert {name: post["state"] for name, post in row["destinations"].items()} == {
        "discord": "posted",
        "x": "posted",
        "web": "posted",
    }
    assert row["destinations"]["x"]["attempts"] == 3


async def test_a_channel_the_bot_cannot_post_in_is_reported_to_the_admin_who_set_it(
    fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path
) -> None:
    fake = fake_discord
    config = make_config(tmp_path)
    dreams = fake.guild.channels[1]
    other = fake.add_guild("Other Lab", channels=("general", "daily"))
    closed = other.channels[1]
    closed.bot_can_send = False
    carol = fake.add_user("carol")
    fake.add_member(other, carol, admin=True)
    with time_machine.travel(at("2026-03-10T08:00:00"), tick=True) as traveller:
        async with dreambot(fake, config) as bot:
            await set_dream_channel(fake, dreams, fake.admin)
            await set_dream_channel(fake, closed, carol, other)
            arrive(traveller, bot, "2026-03-10T08:59:59.8")
            await until(lambda: run_state(config) == "partial", timeout=20)
            assert bot.scheduler is not None
            (row,) = bot.scheduler.status()["schedules"]

    assert len(fake.bot_messages(dreams)) == 1  # posted once, though the Discord destination was retried
    assert fake.bot_messages(closed) == []
    (told,) = fake.bot_messages(fake.dm_channel(carol))  # once, not once per try
    assert told.content.startswith(f"I could not post the dream of the day in <#{closed.id}>")
    assert len(fake_x.replies_by_bot()) == 1  # the others are not held back
    assert row["destinations"]["discord"]["state"] == "failed"
    assert row["destinations"]["discord"]["attempts"] == 3
    assert f"<#{closed.id}>" in row["destinations"]["discord"]["error"]
    assert row["destinations"]["x"]["state"] == "posted" and row["destinations"]["web"]["state"] == "posted"


# ---------------------------------------------------------------------------------------------- sharing


async def test_the_most_liked_shared_dream_is_posted_and_only_shared_ones_are_picked(
    fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path
) -> None:
    fake = fake_discord
    config = make_config(tmp_path, source="shared", destinations=("x",))
    with time_machine.travel(at("2026-03-10T08:00:00"), tick=True):
        async with dreambot(fake, config, schedules=False) as bot:
            # three dreams on Discord; bob shares the first two, the third is never shared
            messages = []
            for seed in (11, 12, 13):
                record = await fake.send_slash_command("visualize", {"what": "banana", "seed": seed})
                await record.wait_for(lambda r: r.original is not None and r.original.attachments)
                messages.append(record.original)
            jobs = [m.custom_ids[0].rsplit(":", 1)[1] for m in messages]
            for message, job in zip(messages[:2], jobs[:2], strict=True):
                shared = await fake.click_button(message, f"dreambot:share:{job}")
                await shared
                assert shared.original is not None and shared.original.content.startswith("Shared:")
            refused = await fake.click_button(messages[0], f"dreambot:share:{jobs[0]}", user=fake.admin)
            await refused
            assert refused.original is not None and refused.original.content.startswith("Only the person who asked")
            # likes: the second gets two (one from Discord, one from the page), the unshared third gets three
            liked = await fake.click_button(messages[1], f"dreambot:like:{jobs[1]}", user=fake.admin)
            await liked
            assert liked.original is not None and liked.original.content == "Liked. This dream has 1 like."
            assert (await (await bot.web.post(f"/api/jobs/{jobs[1]}/like")).json())["likes"] == 2
            assert (await (await bot.web.post(f"/api/jobs/{jobs[1]}/like")).json())["likes"] == 2  # once a browser
            dave = fake.add_user("dave")
            fake.add_member(fake.guild, dave)
            for user in (fake.user, fake.admin, dave):
                await (await fake.click_button(messages[2], f"dreambot:like:{jobs[2]}", user=user))
            assert bot.service.sharing.likes(jobs[2]) == 3

        with time_machine.travel(at("2026-03-10T08:30:00"), tick=True) as traveller:
            async with dreambot(fake, config) as bot:
                arrive(traveller, bot, "2026-03-10T08:59:59.8")
                await until(lambda: run_state(config) == "done", timeout=20)
                winner = await bot.service.view(jobs[1])
                expected = bot.service.store.get(winner.result["key"])  # type: ignore[index]

    (own,) = fake_x.replies_by_bot()
    assert own.text.startswith("Dream of the day: the most-liked dream people shared today")
    assert fake_x.media[own.media_ids[0]].data == expected


async def test_the_page_tick_box_shares_a_dream(fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path) -> None:
    async with dreambot(fake_discord, make_config(tmp_path), schedules=False) as bot:
        shared = await bot.web.post("/api/jobs", data={"mode": "visualize", "subject": "banana", "share": "on"})
        plain = await bot.web.post("/api/jobs", data={"mode": "visualize", "subject": "goldfish"})
        assert shared.status == plain.status == 201
        shared_id, plain_id = (await shared.json())["id"], (await plain.json())["id"]
        assert bot.service.sharing.is_shared(shared_id) and not bot.service.sharing.is_shared(plain_id)
        missing = await bot.web.post("/api/jobs/nosuchjob/like")
        assert missing.status == 404


# ---------------------------------------------------------------------------------------------- preview


async def test_dreambot_preview_shows_the_next_picture_to_the_admin_only(
    fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path
) -> None:
    fake = fake_discord
    config = make_config(tmp_path, source="letters", words=("DREAM",))
    with time_machine.travel(at("2026-03-10T12:00:00"), tick=True):
        async with dreambot(fake, config) as bot:
            await set_dream_channel(fake, fake.guild.channels[1], fake.admin)
            record = await fake.send_slash_command("dreambot preview", {}, user=fake.admin)
            await record.wait_for(lambda r: r.original is not None and r.original.attachments)
            assert bot.scheduler is not None
            (row,) = bot.scheduler.status()["schedules"]
    assert record.original is not None and record.original.ephemeral
    assert record.original.content.startswith("Preview of dream-of-the-day for 2026-03-11T09:00:")
    assert "DREAM in letters made of " in record.original.content
    assert record.original.attachments[0].filename == "preview.png"
    assert fake.bot_messages(fake.guild.channels[1]) == [] and fake_x.replies_by_bot() == []
    assert row["last_run"] is None  # a preview is not a run


async def test_a_crash_between_the_discord_post_and_its_record_posts_nothing_twice(
    fake_discord: FakeDiscord, fake_x: FakeX, tmp_path: Path
) -> None:
    fake = fake_discord
    dreams = fake.guild.channels[1]
    async with dreambot(fake, make_config(tmp_path), schedules=False) as bot:
        await set_dream_channel(fake, dreams, fake.admin)
        image = (Path(__file__).parents[1] / "data" / "chelsea.png").read_bytes()
        first = await bot.discord.post_to_own_account(image, "png", "Dream of the day: a cat", "A cat", "daily/1")
        # the process died after Discord took the post and before its id was written down
        bot.discord.store.db.execute("UPDATE deliveries SET message_id = NULL WHERE job_id LIKE 'own:%'")
        again = await bot.discord.post_to_own_account(image, "png", "Dream of the day: a cat", "A cat", "daily/1")
        assert again == first  # found in the channel's history, not posted again
        other = await bot.discord.post_to_own_account(image, "png", "Dream of the day: a dog", "A dog", "daily/2")
    assert [m.content for m in fake.bot_messages(dreams)] == ["Dream of the day: a cat", "Dream of the day: a dog"]
    assert other != first
    assert fake.bot_messages(dreams)[0].attachments[0].description == "A cat"
