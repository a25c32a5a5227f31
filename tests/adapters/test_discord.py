"""DreamBot's Discord adapter end to end: the real discord.py client against the fake Discord (tests/fake_discord.py).

Everything below the adapter is real too: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engines are the only doubles (NullEngine and stand-ins built on it that hold a job or take their time),
except in the one test that dreams for real with dreamcore on the CPU.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_discord import MANAGE_GUILD, FakeDiscord, InteractionRecord, StoredMessage
from PIL import Image

from bot.adapters.discord import DiscordAdapter
from bot.config import Config, MediaConfig, QueueConfig, WorkerConfig
from bot.engine import DreamcoreEngine, Engine, NullEngine, Rendered
from bot.jobqueue import JobState
from bot.options import MODES, Mode
from bot.service import DreamService
from dreamcore.drawing import MIX_LAYOUTS
from dreamcore.errors import Cancelled
from dreamcore.settings import PRESETS

pytestmark = pytest.mark.asyncio

DATA = Path(__file__).parents[1] / "data"
CHELSEA = (DATA / "chelsea.png").read_bytes()  # 451x300
ROCKET = (DATA / "rocket.jpg").read_bytes()
ACTIONS = ("deeper", "layer", "zoom", "reroll", "delete", "share", "like")


def make_config(tmp_path: Path) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        media=MediaConfig(working_side=96),
    )


class Gated(NullEngine):
    """NullEngine whose jobs wait at a gate, reporting a step every 20 ms, until the gate opens (open at first)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.renders = 0

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        self.renders += 1
        step = 0
        while not self.gate.wait(0.02):
            if should_stop():
                raise Cancelled()
            step += 1
            report(min(0.99, step / 100), f"step {step}", None)
        return super().render(command, image, report, should_stop)


class InLine:
    """Wraps an engine so that jobs stay queued until the test opens ``gate``.

    The worker warms its engine up before it claims its first job, so holding ``warm_up`` keeps every job in the
    queue: the test sees the queued state for certain, however fast the machine, instead of racing the worker.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gate = threading.Event()

    def warm_up(self) -> None:
        if not self.gate.wait(60):
            raise RuntimeError("the test never let the worker start")
        self.engine.warm_up()

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        return self.engine.render(command, image, report, should_stop)


class ShowsProgress(DreamcoreEngine):
    """The real engine, holding the first step that has a picture until the test has seen a progress edit
    with its preview (rather than pausing every step and hoping the edit lands meanwhile)."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.preview_seen = threading.Event()

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        def held(fraction, text, step_image) -> None:  # type: ignore[no-untyped-def]
            report(fraction, text, step_image)
            if step_image is not None and not self.preview_seen.wait(60):
                raise RuntimeError("the test never saw a preview")

        return super().render(command, image, held, should_stop)


@asynccontextmanager
async def dreambot(
    fake: FakeDiscord, config: Config, engine: Engine, *, dev_guild_id: int | None = None
) -> AsyncIterator[DiscordAdapter]:
    """A DreamService and its Discord adapter, logged in to the fake and ready; both stopped afterwards."""
    service = await DreamService.open(config, engine)
    service.start()
    try:
        adapter = DiscordAdapter(
            service,
            fake.token,
            dev_guild_id=dev_guild_id,
            progress_every=0.05,
            client_options={"guild_ready_timeout": 0.05},
        )
        async with fake.run_client(adapter.client):
            try:
                yield adapter
            finally:
                await adapter.close()
    finally:
        await service.close()


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    """The adapter logs what it swallows (a failed post, a failed command); none may happen unless a test says so."""
    yield caplog
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and r.name.startswith("bot")]
    assert not errors, [r.getMessage() for r in errors]


def result_on(record: InteractionRecord) -> StoredMessage | None:
    """The interaction's message once it holds a result (a dream.* file)."""
    original = record.original
    if original is not None and any(f.filename.startswith("dream.") for f in original.attachments):
        return original
    return None


async def result_of(record: InteractionRecord, timeout: float = 10.0) -> StoredMessage:
    return await record.wait_for(result_on, timeout=timeout)


def shown(message: StoredMessage | None) -> list[str]:
    """Every content a message has shown, oldest first (the first is a deferred answer's empty placeholder)."""
    if message is None:
        return []
    return [payload.get("content", "") for payload in message.history] + [message.content]


def showed(record: InteractionRecord, word: str) -> bool:
    return any(word in content for content in shown(record.original))


def previews_shown(fake: FakeDiscord) -> list:  # type: ignore[type-arg]
    """The previews the bot has put on its messages so far (answered edits with a preview.jpg)."""
    edits = [r for r in fake.find_requests("PATCH /webhooks/*") if r.status == 200]
    return [f for r in edits for f in r.files if f.filename == "preview.jpg"]


def job_id_in(text: str) -> str:
    match = re.search(r"`([A-Za-z0-9_-]{12})`", text)
    assert match, text
    return match[1]


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def jobs_of(adapter: DiscordAdapter, user) -> list:  # type: ignore[no-untyped-def]
    return await adapter.service.queue.jobs_of(f"discord:{user.id}")


# ---------------------------------------------------------------------------------------------- login and sync


async def test_login_syncs_commands_built_from_the_option_table(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    config = make_config(tmp_path)
    # development: the commands go to one server, at once; nothing global
    async with dreambot(fake, config, NullEngine(), dev_guild_id=int(fake.guild.id)):
        pass
    assert fake.registered_commands() == {}
    assert "dream" in fake.registered_commands(fake.guild)
    # production: global
    async with dreambot(fake, config, NullEngine()):
        pass
    commands = fake.registered_commands()
    assert set(commands) == {
        "dream",
        "zoom",
        "layers",
        "visualize",
        "mix",
        "path",
        "letters",
        "queue",
        "cancel",
        "help",
        "dreambot",
    }
    assert set(fake.registered_commands(fake.guild)) == set(commands)

    dream = {o["name"]: o for o in commands["dream"]["options"]}
    assert commands["dream"]["options"][0]["name"] == "image"
    assert (dream["image"]["type"], dream["image"]["required"]) == (11, True)
    for name in ("octaves", "iterations", "seed"):
        spec = MODES[Mode.DREAM].option(name)
        assert (dream[name]["type"], dream[name]["min_value"], dream[name]["max_value"]) == (
            4,
            spec.minimum,
            spec.maximum,
        ), name
        assert dream[name]["description"] == spec.help[:100]
    strength = MODES[Mode.DREAM].option("strength")
    assert (dream["strength"]["type"], dream["strength"]["min_value"], dream["strength"]["max_value"]) == (
        10,
        strength.minimum,
        strength.maximum,
    )
    assert [c["value"] for c in dream["preset"]["choices"]] == list(PRESETS)
    assert dream["layer"]["autocomplete"] is True and "choices" not in dream["layer"]
    assert dream["network"]["autocomplete"] is True
    zoom = {o["name"]: o for o in commands["zoom"]["options"]}
    assert (zoom["frames"]["min_value"], zoom["frames"]["max_value"]) == (8, 120)
    assert zoom["layer"]["autocomplete"] is True
    mix = {o["name"]: o for o in commands["mix"]["options"]}
    assert [c["value"] for c in mix["layout"]["choices"]] == list(MIX_LAYOUTS)
    assert {o["name"]: o for o in commands["visualize"]["options"]}["what"]["autocomplete"] is True

    settings = commands["dreambot"]
    assert settings["default_member_permissions"] == str(MANAGE_GUILD)
    assert settings["contexts"] == [0] and settings["dm_permission"] is False  # servers only
    assert [o["name"] for o in settings["options"]] == ["settings", "preview"]

    # no privileged intent is asked for
    (identify,) = [f for d, f in fake.gateway_log if d == "recv" and f.get("op") == 2][-1:]
    assert identify["d"]["intents"] & ((1 << 1) | (1 << 8) | (1 << 15)) == 0


# ---------------------------------------------------------------------------------------------- /dream


async def test_slash_dream_with_the_real_engine(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    dreaming = ShowsProgress("cpu")
    engine = InLine(dreaming)
    async with dreambot(fake, make_config(tmp_path), engine):
        try:
            record = await fake.send_slash_command(
                "dream", {"octaves": 1, "iterations": 3, "seed": 5}, attachments={"image": ("chelsea.png", CHELSEA)}
            )
            await record
            assert record.response_type == 5 and not record.expired
            assert record.acked_at is not None and record.acked_at - record.created < 3.0
            # the job waits in line (held there by the test) and the message says so
            await record.wait_for(lambda r: showed(r, "next in line"), timeout=10)
            engine.gate.set()
            await fake.wait_for(lambda f: previews_shown(f), timeout=60, what="a progress edit with a preview")
            dreaming.preview_seen.set()
            result = await result_of(record, timeout=60)
        finally:  # never leave the dreaming thread waiting on a test that failed
            engine.gate.set()
            dreaming.preview_seen.set()

    contents = shown(result)
    job_id = job_id_in(result.content)
    # while waiting, then dreaming
    assert any("queued" in c and "next in line" in c for c in contents), contents
    percents = [c for c in contents if "dreaming" in c and "%" in c]
    assert percents, contents
    assert contents.index(percents[0]) > next(i for i, c in enumerate(contents) if "queued" in c)
    # previews while dreaming, then the result replaces them
    edits = [r for r in fake.find_requests("PATCH /webhooks/*") if r.status == 200]
    assert any(f.filename == "preview.jpg" for r in edits for f in r.files)
    preview = next(f for r in edits for f in r.files if f.filename == "preview.jpg")
    assert decoded(preview.data).format == "JPEG"

    (attachment,) = result.attachments
    assert attachment.filename == "dream.png"
    dreamed = decoded(attachment.data)
    assert dreamed.format == "PNG" and dreamed.size == (96, 64)
    photo = np.asarray(decoded(CHELSEA).convert("RGB").resize(dreamed.size, Image.LANCZOS), dtype=float)
    assert np.abs(np.asarray(dreamed.convert("RGB"), dtype=float) - photo).mean() > 3.0
    # the settings line and the buttons, with ids that survive restarts
    assert "lite0" in result.content and "seed 5" in result.content and job_id in result.content
    assert result.custom_ids == [f"dreambot:{action}:{job_id}" for action in ACTIONS]
    labels = [c["label"] for c in result.components[0]["components"]]
    assert labels == ["Deeper", "Another layer", "Zoom", "Re-roll", "Delete"]
    assert not result.ephemeral
    assert fake.bot_messages() == [result]  # one message: the answer, edited in place


async def test_result_fits_the_servers_upload_limit(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    fake.guild.upload_limit = 6000  # the PNG of the result is larger
    async with dreambot(fake, make_config(tmp_path), NullEngine()):
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        result = await result_of(record)
    (attachment,) = result.attachments
    assert attachment.filename == "dream.jpg" and attachment.size <= 6000
    assert decoded(attachment.data).format == "JPEG"


# ---------------------------------------------------------------------------------------------- mentions


async def test_mention_with_an_image(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        await fake.post_message(content="lovely", mentions_bot=False, attachments=[("r.jpg", ROCKET)])
        asked = await fake.post_message(content="deeper seed=3", attachments=[("chelsea.png", CHELSEA, "image/png")])
        result = await fake.wait_for_message(lambda m: m.attachments, channel=fake.channel)
        await fake.wait_for(lambda f: all(m is result for m in f.bot_messages()))  # the status reply goes
        (job,) = await jobs_of(adapter, fake.user)

    assert job.state is JobState.DONE
    assert result.payload["message_reference"]["message_id"] == asked.id
    assert result.content.startswith(f"<@{fake.user.id}> ") and job.id in result.content
    assert [m["id"] for m in result.payload["mentions"]] == [fake.user.id]
    assert result.custom_ids == [f"dreambot:{action}:{job.id}" for action in ACTIONS]
    assert decoded(result.attachments[0].data).size == (96, 64)  # the photo (the null engine returns it)
    status = [m for m in fake.bot_messages(include_deleted=True) if m is not result]
    assert len(status) == 1 and status[0].deleted
    assert any("queued" in content for content in shown(status[0]))
    assert len(fake.bot_messages(include_deleted=True)) == 2  # the quiet post got nothing


async def test_mention_in_a_reply_to_an_image(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        photo = await fake.post_message(
            content="my cat", author=fake.admin, mentions_bot=False, attachments=[("chelsea.png", CHELSEA)]
        )
        asked = await fake.post_message(content="patterns", reference=photo)
        result = await fake.wait_for_message(lambda m: m.attachments)
        (job,) = await jobs_of(adapter, fake.user)
        request = await adapter.service.request_of(job.id)
    assert request.command.options == {"preset": "patterns"}
    assert result.payload["message_reference"]["message_id"] == asked.id
    assert decoded(result.attachments[0].data).size == (96, 64)


async def test_mention_with_a_linked_picture(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        shown_link = fake.media_url("cat.png", CHELSEA)  # Discord shows a posted link as an image embed
        embed = {
            "type": "image",
            "url": "https://example.org/cat.png",
            "thumbnail": {"url": "https://example.org/cat.png", "proxy_url": shown_link, "width": 96, "height": 64},
        }
        await fake.post_message(content="https://example.org/cat.png deeper", embeds=[embed])
        result = await fake.wait_for_message(lambda m: m.attachments)
        (job,) = await jobs_of(adapter, fake.user)
        # a picture anywhere else is not fetched: the bot never follows addresses a message names
        elsewhere = {"type": "image", "url": "http://10.0.0.1/x.png", "thumbnail": {"url": "http://10.0.0.1/x.png"}}
        await fake.post_message(content="http://10.0.0.1/x.png deeper", embeds=[elsewhere])
        refused = await fake.wait_for_message(lambda m: "Discord itself shows" in m.content)
    assert decoded(result.attachments[0].data).size == (96, 64) and job.state is JobState.DONE
    assert refused.content.startswith("⚠️ I can only fetch pictures that Discord itself shows")
    assert not fake.find_requests("GET */x.png")


async def test_direct_message_needs_no_mention_and_stays_private(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    dm = fake.dm_channel(fake.user)
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        await fake.post_message(dm, "subtle", mentions_bot=False, attachments=[("rocket.jpg", ROCKET)])
        result = await fake.wait_for_message(lambda m: m.attachments, channel=dm)
        (job,) = await jobs_of(adapter, fake.user)
        view = await adapter.service.view(job.id)
    assert view.destination["public"] is False  # a photo sent privately never reaches the public gallery
    assert view.options == {"preset": "subtle"} and job.id in result.content
    assert fake.bot_messages(fake.channel) == []


async def test_a_channel_the_bot_cannot_post_in(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    fake.channel.bot_can_send = False
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        await fake.post_message(content="deeper", attachments=[("chelsea.png", CHELSEA)])
        refused = await fake.wait_for_request("POST /channels/*/messages")
        await asyncio.sleep(0.1)
        assert refused.status == 403
        assert await adapter.service.queue.all_jobs() == []  # nothing dreamed that could not be delivered
    assert fake.bot_messages() == []


async def test_mention_errors_are_sentences(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        asked = await fake.post_message(content="hello there")
        reply = await fake.wait_for_message(channel=fake.channel)
        assert reply.content.startswith("⚠️ Attach a photo to dream it")
        assert reply.payload["message_reference"]["message_id"] == asked.id
        await fake.post_message(content="dream", attachments=[("notes.txt", b"just words", "text/plain")])
        refused = await fake.wait_for_message(lambda m: "not an image" in m.content)
        assert refused.content == "⚠️ That file is not an image I can read; send a photo as PNG, JPEG, WebP, GIF."
        assert await adapter.service.queue.all_jobs() == []


# ---------------------------------------------------------------------------------------------- buttons


async def test_buttons_on_a_result(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    carol = fake.add_user("carol")
    fake.add_member(fake.guild, carol)
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        record = await fake.send_slash_command(
            "dream", {"layer": "block9", "seed": 1}, attachments={"image": ("chelsea.png", CHELSEA)}
        )
        result = await result_of(record)
        first = job_id_in(result.content)

        reroll = await fake.click_button(result, f"dreambot:reroll:{first}")
        rerolled = await result_of(reroll)
        second = job_id_in(rerolled.content)
        assert reroll.response_type == 5 and second != first and rerolled is not result
        assert rerolled.custom_ids == [f"dreambot:{action}:{second}" for action in ACTIONS]
        options = (await adapter.service.request_of(second)).command.options
        assert options["layer"] == "block9" and options["seed"] != 1

        deeper = await fake.click_button(result, f"dreambot:deeper:{first}")
        await result_of(deeper)
        zoom = await fake.click_button(result, f"dreambot:zoom:{first}")
        await result_of(zoom)
        layer = await fake.click_button(result, f"dreambot:layer:{first}")
        await result_of(layer)
        jobs = {job.id: job for job in await jobs_of(adapter, fake.user)}
        assert len(jobs) == 5
        requests = {job_id: await adapter.service.request_of(job_id) for job_id in jobs}
        by_button = {
            name: requests[job_id_in(rec.original.content)]  # type: ignore[union-attr]
            for name, rec in (("deeper", deeper), ("zoom", zoom), ("layer", layer))
        }
        first_result = (await adapter.service.view(first)).result
        assert first_result is not None and by_button["deeper"].image_key == first_result["key"]
        assert by_button["zoom"].command.mode is Mode.ZOOM
        assert by_button["layer"].command.options["layer"] != "block9"

        # Delete: a stranger is refused (only they see the refusal); the requester deletes it
        refused = await fake.click_button(result, f"dreambot:delete:{first}", user=carol)
        await refused
        assert refused.response_type == 4 and refused.original is not None and refused.original.ephemeral
        assert refused.original.content.startswith("Only the person who asked")
        assert not result.deleted
        deleted = await fake.click_button(result, f"dreambot:delete:{first}")
        await deleted.wait_for(lambda r: result.deleted)
        assert deleted.response_type == 6 and not rerolled.deleted


# ---------------------------------------------------------------------------------------------- errors


async def test_slash_errors_are_sentences_and_queue_nothing(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        text = await fake.send_slash_command("dream", attachments={"image": ("notes.txt", b"words", "text/plain")})
        await text.wait_original_edit()
        assert text.original is not None
        assert text.original.content == "⚠️ That file is not an image I can read; send a photo as PNG, JPEG, WebP, GIF."

        layer = await fake.send_slash_command(
            "dream", {"layer": "blok9"}, attachments={"image": ("chelsea.png", CHELSEA)}
        )
        await layer.wait_original_edit()
        assert layer.original is not None
        assert layer.original.content.startswith("⚠️ Unknown layer of lite0 'blok9'. Did you mean 'block9'")

        visualize = await fake.send_slash_command("visualize", {"what": "bananna"})
        await visualize.wait_original_edit()
        assert visualize.original is not None and "banana" in visualize.original.content
        assert await adapter.service.queue.all_jobs() == []


# ---------------------------------------------------------------------------------------------- restarts and time


async def test_restart_in_the_middle_of_a_job(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    config = make_config(tmp_path)
    engine = Gated()
    engine.gate.clear()
    async with dreambot(fake, config, engine) as adapter:
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        await record.wait_for(lambda r: showed(r, "dreaming"))
        (job,) = await jobs_of(adapter, fake.user)
    # stopped mid-dream: the job went back to the queue
    engine.gate.set()
    assert result_on(record) is None

    async with dreambot(fake, config, engine) as adapter:
        result = await result_of(record)
        assert (await adapter.service.view(job.id)).state == "done"
    async with dreambot(fake, config, engine) as adapter:  # a third start posts nothing again; the buttons work
        await asyncio.wait_for(adapter.caught_up.wait(), 10)  # it has looked for answers to post, and posted none
        press = await fake.click_button(result, f"dreambot:delete:{job.id}")
        await press.wait_for(lambda r: result.deleted)

    assert engine.renders == 2
    assert job.id in result.content
    posts = [r for r in fake.find_requests("/webhooks/*") if any(f.filename.startswith("dream.") for f in r.files)]
    assert len(posts) == 1 and posts[0].status == 200
    assert fake.find_requests("POST /channels/*/messages") == []
    assert fake.bot_messages(include_deleted=True) == [result]


async def test_result_finishing_while_the_bot_is_away(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    config = make_config(tmp_path)
    engine = InLine(NullEngine())  # the job stays queued while the bot is on
    try:
        async with dreambot(fake, config, engine):
            record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
            await record.wait_for(lambda r: showed(r, "queued"))
    finally:
        engine.gate.set()
    service = await DreamService.open(config, engine)  # the service alone: the dream finishes, nobody posts it
    service.start()
    try:
        async with asyncio.timeout(10):
            while (await service.queue.counts())[JobState.DONE] == 0:
                await asyncio.sleep(0.02)
    finally:
        await service.close()
    assert result_on(record) is None
    async with dreambot(fake, config, engine):
        result = await result_of(record)
    assert fake.bot_messages() == [result]


async def test_result_after_the_token_expired_goes_to_the_channel(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    engine = Gated()
    engine.gate.clear()
    async with dreambot(fake, make_config(tmp_path), engine):
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        await record.wait_for(lambda r: showed(r, "dreaming"))
        fake.advance_time(15 * 60 + 1)
        engine.gate.set()
        posted = await fake.wait_for_message(lambda m: m.attachments and m is not record.original)
    assert posted.source == "channel"
    assert posted.content.startswith(f"<@{fake.user.id}> ")
    assert [m["id"] for m in posted.payload["mentions"]] == [fake.user.id]
    assert posted.attachments[0].filename == "dream.png"
    assert "dreambot:reroll:" in " ".join(posted.custom_ids)
    assert record.original is not None and not record.original.attachments


async def test_progress_edits_never_delay_the_result(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    engine = Gated()
    engine.gate.clear()
    async with dreambot(fake, make_config(tmp_path), engine):
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        await record.wait_for(lambda r: showed(r, "dreaming"))
        # the next progress edit is answered 429 "retry in 5 s": discord.py would sleep, holding the route
        rule = fake.rate_limit("PATCH /webhooks/*", times=1, retry_after=5.0)
        await fake.wait_for(lambda f: rule.hits == 1)
        engine.gate.set()
        result = await result_of(record)
        await asyncio.sleep(5.2)  # long enough for a retry of the refused edit to show up, if it were sent
    patches = fake.find_requests("PATCH /webhooks/*")
    # Held behind the refused edit, the answer could not have gone out before the 5 s were over; it did.
    (refused,) = [r for r in patches if r.status == 429]
    answer = next(r for r in patches if r.files and r.files[0].filename == "dream.png")
    assert answer.time - refused.time < 5.0, answer.time - refused.time
    assert patches[-1].files and patches[-1].files[0].filename == "dream.png"  # nothing overwrote the result
    assert result_on(record) is result and result.custom_ids


# ---------------------------------------------------------------------------------------------- /queue, /cancel


async def test_queue_and_cancel(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    engine = Gated()
    engine.gate.clear()
    async with dreambot(fake, make_config(tmp_path), engine) as adapter:
        empty = await fake.send_slash_command("queue")
        await empty
        assert empty.original is not None and empty.original.ephemeral
        assert empty.original.content.startswith("You have no dreams yet.")

        busy = await fake.send_slash_command("dream", user=fake.admin, attachments={"image": ("a.png", CHELSEA)})
        await busy.wait_for(lambda r: showed(r, "dreaming"))
        mine = await fake.send_slash_command("dream", attachments={"image": ("b.png", CHELSEA)})
        await mine.wait_for(lambda r: showed(r, "queued"))
        (job,) = await jobs_of(adapter, fake.user)

        listing = await fake.send_slash_command("queue")
        await listing
        assert listing.original is not None and listing.original.ephemeral
        assert job.id in listing.original.content and "queued, next in line" in listing.original.content

        cancel = await fake.send_slash_command("cancel")
        await cancel
        assert cancel.original is not None and cancel.original.content == f"Cancelled `{job.id}`."
        await mine.wait_for(lambda r: "cancelled" in r.original.content)  # type: ignore[union-attr]
        assert (await adapter.service.view(job.id)).state == "cancelled"

        again = await fake.send_slash_command("cancel")
        await again
        assert again.original is not None and again.original.content.startswith("You have nothing queued or dreaming.")
        others = await fake.send_slash_command("cancel", {"job": job_id_in(busy.original.content)})  # type: ignore[union-attr]
        await others
        assert others.original is not None and others.original.content.startswith("Only the person who asked")
        engine.gate.set()
        await result_of(busy)


# ---------------------------------------------------------------------------------------------- server settings


async def test_server_settings(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        # Discord itself offers the command only to members with Manage Server
        with pytest.raises(ValueError, match="lacks the permissions"):
            await fake.send_slash_command("dreambot settings", {"public": False}, user=fake.user)
        wrong = await fake.send_slash_command("dreambot settings", {"networks": "lite9"}, user=fake.admin)
        await wrong
        assert wrong.original is not None and wrong.original.content.startswith("Unknown network lite9;")

        admin = await fake.send_slash_command(
            "dreambot settings",
            {"public": False, "networks": "lite1", "dream_channel": fake.guild.channels[1]},
            user=fake.admin,
        )
        await admin
        assert admin.original is not None and admin.original.ephemeral
        assert admin.original.content == (
            f"Dream of the day: <#{fake.guild.channels[1].id}>. Results: requester only. Networks: lite1. "
            "Dreams waiting per person: the bot default."
        )
        stored = adapter.store.guild(int(fake.guild.id))
        assert (stored.public_results, stored.allowed_networks) == (False, "lite1")

        # results now go to the requester only; the server's network is used
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        result = await result_of(record)
        assert result.ephemeral and result.custom_ids
        (job,) = await jobs_of(adapter, fake.user)
        assert (await adapter.service.request_of(job.id)).command.options["network"] == "lite1"
        assert (await adapter.service.view(job.id)).destination["public"] is False
        press = await fake.click_button(result, f"dreambot:delete:{job.id}")  # an ephemeral result goes too
        await press.wait_for(lambda r: result.deleted)

        # a network the server does not allow is refused, by slash command and by mention
        refused = await fake.send_slash_command(
            "dream", {"network": "lite0"}, attachments={"image": ("chelsea.png", CHELSEA)}
        )
        await refused.wait_original_edit()
        assert refused.original is not None
        assert refused.original.content == "⚠️ This server allows these networks: lite1. Pick one of them."
        await fake.post_message(content="network=lite2", attachments=[("chelsea.png", CHELSEA)])
        await fake.wait_for_message(lambda m: "allows these networks" in m.content)
        assert len(await jobs_of(adapter, fake.user)) == 1

        networks = await fake.send_autocomplete("dream", {"network": "lite"}, focused="network")
        await networks
        assert [c["value"] for c in networks.autocomplete_choices or []] == ["lite1"]


async def test_a_server_limits_dreams_waiting_per_person(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    engine = Gated()
    async with dreambot(fake, make_config(tmp_path), engine) as adapter:
        limit = await fake.send_slash_command("dreambot settings", {"per_user_limit": 1}, user=fake.admin)
        await limit
        assert limit.original is not None and "Dreams waiting per person: 1." in limit.original.content
        engine.gate.clear()
        first = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        await first.wait_for(lambda r: showed(r, "dreaming"))
        second = await fake.send_slash_command("dream", {"seed": 2}, attachments={"image": ("chelsea.png", CHELSEA)})
        await second.wait_original_edit()
        assert second.original is not None
        assert second.original.content == (
            "⚠️ This server allows 1 dream waiting per person; wait for one to finish or cancel one."
        )
        assert len(await jobs_of(adapter, fake.user)) == 1
        # the limit is this server's: the admin is not held to it
        by_admin = await fake.send_slash_command(
            "dream", {"seed": 3}, user=fake.admin, attachments={"image": ("chelsea.png", CHELSEA)}
        )
        await by_admin.wait_for(lambda r: showed(r, "queued") or showed(r, "dreaming"))
        engine.gate.set()
        await result_of(first)


async def test_private_result_after_the_token_expired_goes_to_dms(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    engine = Gated()
    async with dreambot(fake, make_config(tmp_path), engine) as adapter:
        adapter.store.set_guild(int(fake.guild.id), adapter.store.guild(None).__class__(public_results=False))
        engine.gate.clear()
        record = await fake.send_slash_command("dream", attachments={"image": ("chelsea.png", CHELSEA)})
        await record.wait_for(lambda r: showed(r, "dreaming"))
        assert record.original is not None and record.original.ephemeral
        fake.expire_token(record)
        engine.gate.set()
        dm = fake.dm_channel(fake.user)
        posted = await fake.wait_for_message(lambda m: m.attachments, channel=dm)
    assert posted.attachments[0].filename == "dream.png"
    assert [m for m in fake.bot_messages(fake.channel) if not m.ephemeral] == []


# ---------------------------------------------------------------------------------------------- help, autocomplete


async def test_help(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()):
        record = await fake.send_slash_command("help")
        await record
    assert record.original is not None and record.original.ephemeral
    text = record.original.content
    for word in ("/dream", "/zoom", "/visualize", "/queue", "/cancel", "mention", "Re-roll", "Delete", "deeper"):
        assert word in text, word
    assert len(text) <= 2000


async def test_autocomplete(fake_discord: FakeDiscord, tmp_path: Path) -> None:
    fake = fake_discord
    async with dreambot(fake, make_config(tmp_path), NullEngine()):
        layer = await fake.send_autocomplete("dream", {"layer": "block1"}, focused="layer")
        await layer
        values = [c["value"] for c in layer.autocomplete_choices or []]
        assert values == ["block1", "block10", "block11", "block12", "block13", "block14", "block15"]
        assert layer.autocomplete_choices[0]["name"].startswith("block1 (")  # type: ignore[index]

        mixed = await fake.send_autocomplete("dream", {"layer": "block9+0.5*block1"}, focused="layer")
        await mixed
        assert [c["value"] for c in mixed.autocomplete_choices or []][:2] == ["block9+0.5*block1", "block9+0.5*block10"]

        other = await fake.send_autocomplete("dream", {"network": "googlenet", "layer": "4a"}, focused="layer")
        await other
        assert [c["value"] for c in other.autocomplete_choices or []] == ["inception_4a"]

        what = await fake.send_autocomplete("visualize", {"what": "bana"}, focused="what")
        await what
        assert (what.autocomplete_choices or [{}])[0].get("value") == "banana"


async def test_only_networks_the_bot_has_are_offered(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path / "cache"))  # no googlenet weights there
    monkeypatch.delenv("DREAMCORE_OFFLINE", raising=False)
    async with dreambot(fake, make_config(tmp_path), NullEngine()) as adapter:
        offered = await fake.send_autocomplete("dream", {"network": ""}, focused="network")
        await offered
        assert [c["value"] for c in offered.autocomplete_choices or []] == ["lite0", "lite1", "lite2"]

        refused = await fake.send_slash_command(
            "dream", {"network": "googlenet"}, attachments={"image": ("chelsea.png", CHELSEA)}
        )
        await refused.wait_original_edit()
        assert refused.original is not None
        assert refused.original.content.endswith("googlenet is not installed on this bot; try lite0, lite1 or lite2.")
        assert "/" not in refused.original.content and "dreamcore" not in refused.original.content
        assert await adapter.service.queue.all_jobs() == []
        mention = await fake.post_message(content="network=vgg16", attachments=[("chelsea.png", CHELSEA)])
        reply = await fake.wait_for_message(lambda m: "vgg16 is not installed on this bot" in m.content)
        assert reply.payload["message_reference"]["message_id"] == mention.id
        settings = await fake.send_slash_command("dreambot settings", {"networks": "googlenet"}, user=fake.admin)
        await settings
        assert settings.original is not None and settings.original.content.startswith("Unknown network googlenet;")

        weights = tmp_path / "cache" / "weights" / "googlenet-1378be20.pth"
        weights.parent.mkdir(parents=True)
        torch.save({"fc.weight": torch.randn(2, 3)}, weights)  # a tiny random checkpoint: present
        again = await fake.send_autocomplete("dream", {"network": "goo"}, focused="network")
        await again
        assert [c["value"] for c in again.autocomplete_choices or []] == ["googlenet"]
