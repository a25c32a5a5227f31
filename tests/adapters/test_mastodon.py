"""The Mastodon adapter end to end: Mastodon.py's real client against the strict fake Mastodon (fake_mastodon.py).

Below the adapter everything is real: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engine is social_testing.py's stand-in that inverts the photo.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_mastodon import BOT_ID, TOKEN, FakeMastodon
from social_testing import DATA, Clock, Inverting, adapter_config, decoded, photo, running, settled
from waiting import until

from bot.adapters.mastodon import MastodonAdapter, RateLimited, less_public
from bot.adapters.social import RateWindow
from bot.config import (
    Config,
    ConfigError,
    MastodonConfig,
    MastodonKeys,
    load_config,
)

pytestmark = pytest.mark.asyncio


def make_config(tmp_path: Path, **mastodon: object) -> Config:
    return adapter_config(tmp_path, mastodon=MastodonConfig(**mastodon))  # type: ignore[arg-type]


def mastobot(
    fake: FakeMastodon, config: Config, clock: Callable[[], float] | None = None
) -> AbstractAsyncContextManager[MastodonAdapter]:
    return running(
        config,
        lambda service: MastodonAdapter(
            service,
            config.mastodon,
            MastodonKeys(fake.base_url, TOKEN),
            clock=clock or time.time,
            media_check_seconds=0,
        ),
    )


@pytest.fixture
def fake() -> FakeMastodon:
    with FakeMastodon() as mastodon:
        yield mastodon


# ---------------------------------------------------------------------------------------------- answers


async def test_a_mention_with_a_photo_gets_one_public_reply_with_the_dream_and_alt_text(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    alice = fake.user("alice")
    original = photo()
    post = fake.post(alice, "@dreambot deeper", photo=original)
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await adapter.poll_once()  # read again: nothing new, nothing repeated
        await settled(adapter)
        assert adapter.status()["state"] == "connected" and adapter.status()["account"] == "dreambot"
        job_id = adapter.store.entry(post).job_id
    [reply] = fake.replies_by_bot(post)
    assert reply.visibility == "public" and reply.text.startswith("@alice ")
    assert fake.idempotency[job_id] == reply.id  # the job id was the reply's Idempotency-Key
    [media_id] = reply.media_ids
    media = fake.media[media_id]
    result = decoded(media.data)
    source = decoded(original).convert("RGB").resize(result.size)
    assert result.convert("RGB").tobytes() != source.tobytes()
    assert media.description.startswith("DeepDream of your photo: lite0") and "deep look" in media.description
    assert media.looks >= 2  # it waited out "still processing" before posting
    assert fake.accounts[BOT_ID].bot  # marked as a bot at start
    assert not fake.refused


async def test_a_direct_mention_gets_a_direct_reply_and_keeps_the_content_warning(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    bob = fake.user("bob")
    secret = fake.post(bob, "@dreambot nightmare", photo=photo(), visibility="direct")
    private = fake.post(
        bob, "@dreambot", photo=photo(), visibility="private", sensitive=True, spoiler_text="eye strain"
    )
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(secret) and fake.replies_by_bot(private))
        await settled(adapter)
    [direct] = fake.replies_by_bot(secret)
    assert direct.visibility == "direct" and direct.text.startswith("@bob ") and direct.media_ids
    [followers] = fake.replies_by_bot(private)
    assert followers.visibility == "private" and followers.sensitive and followers.spoiler_text == "eye strain"


async def test_replies_are_never_more_public_than_the_setting_or_the_original(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    assert less_public("public", "unlisted") == "unlisted" and less_public("direct", "public") == "direct"
    carol = fake.user("carol")
    post = fake.post(carol, "@dreambot", photo=photo())
    async with mastobot(fake, make_config(tmp_path, max_visibility="unlisted")) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
    assert fake.replies_by_bot(post)[0].visibility == "unlisted"


async def test_a_mention_replying_to_a_photo_dreams_that_photo(fake: FakeMastodon, tmp_path: Path) -> None:
    dana, erin = fake.user("dana"), fake.user("erin")
    photo_post = fake.post(dana, "sunset", photo=photo((10, 10, 200)))
    mention = fake.post(erin, "@dreambot", reply_to=photo_post)
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(mention))
    [reply] = fake.replies_by_bot(mention)
    assert reply.media_ids and not fake.replies_by_bot(photo_post)


async def test_a_post_without_media_gets_one_how_to_per_person_per_day(fake: FakeMastodon, tmp_path: Path) -> None:
    frank = fake.user("frank")
    first = fake.post(frank, "@dreambot hello")
    clock = Clock()
    async with mastobot(fake, make_config(tmp_path), clock) as adapter:
        await adapter.poll_once()
        second = fake.post(frank, "@dreambot are you there?")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(first)) == 1 and not fake.replies_by_bot(second)
        assert "with a photo" in fake.replies_by_bot(first)[0].text
        assert not fake.replies_by_bot(first)[0].media_ids
        clock.now += 86400
        third = fake.post(frank, "@dreambot hi again")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(third)) == 1


async def test_bad_options_and_a_damaged_photo_get_short_error_replies(fake: FakeMastodon, tmp_path: Path) -> None:
    gina = fake.user("gina")
    damaged = fake.post(gina, "@dreambot", photo=photo()[:200])
    wrong = fake.post(gina, "@dreambot layer=nosuchlayer", photo=photo())
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(damaged) and fake.replies_by_bot(wrong))
        await settled(adapter)
    [reply] = fake.replies_by_bot(damaged)
    assert "⚠️" in reply.text and "damaged" in reply.text and not reply.media_ids
    [reply] = fake.replies_by_bot(wrong)
    assert "⚠️" in reply.text and len(reply.text) <= 500


async def test_nobot_in_a_bio_and_bot_accounts_are_never_answered(fake: FakeMastodon, tmp_path: Path) -> None:
    shy = fake.user("shy", note="photographer. #NoBot please")
    robot = fake.user("robot", bot=True)
    posts = [fake.post(shy, "@dreambot", photo=photo()), fake.post(robot, "@dreambot", photo=photo())]
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await settled(adapter)
        counters = adapter.status()
    assert not any(fake.replies_by_bot(p) for p in posts)
    assert counters["nobot_not_answered"] == 1 and counters["bot_accounts_not_answered"] == 1


async def test_stop_opts_out_with_one_confirmation(fake: FakeMastodon, tmp_path: Path) -> None:
    hank = fake.user("hank")
    first = fake.post(hank, "@dreambot", photo=photo())
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(first))
        stop = fake.post(hank, "@dreambot stop", reply_to=fake.replies_by_bot(first)[0].id)
        await adapter.poll_once()
        again = fake.post(hank, "@dreambot deeper", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
    assert len(fake.replies_by_bot(stop)) == 1 and "not answer you again" in fake.replies_by_bot(stop)[0].text
    assert not fake.replies_by_bot(again)


async def test_a_hashtag_timeline_is_read_only_when_configured(fake: FakeMastodon, tmp_path: Path) -> None:
    ivy = fake.user("ivy")
    tagged = fake.post(ivy, "my cat #deepdream", photo=photo())
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await settled(adapter)
    assert not fake.replies_by_bot(tagged)
    assert not any(path.startswith("/api/v1/timelines/tag/") for _, path in fake.calls)
    async with mastobot(fake, make_config(tmp_path, hashtags=["#deepdream"])) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(tagged))
    assert len(fake.replies_by_bot(tagged)) == 1


# ---------------------------------------------------------------------------------------------- reading


async def test_mentions_page_until_caught_up_and_the_cursor_survives_a_restart(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    fake.page_size = 2
    config = make_config(tmp_path)
    users = [fake.user(f"u{i}") for i in range(5)]
    async with mastobot(fake, config) as adapter:
        await adapter.poll_once()  # a first start: nothing yet
        posts = [fake.post(u, "@dreambot", photo=photo()) for u in users]
        fake.favourite(users[0], posts[0])  # not a mention: not read
        await adapter.poll_once()
        await settled(adapter)
    reads = [call for call in fake.calls if call == ("GET", "/api/v1/notifications")]
    assert len(reads) == 1 + 4  # the first read, then pages of 2, 2 and 1, and the empty one that says caught up
    async with mastobot(fake, config) as adapter:
        late = fake.post(users[0], "@dreambot", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
    for post in [*posts, late]:
        assert len(fake.replies_by_bot(post)) == 1, post


async def test_429_waits_for_the_reset_and_loses_nothing(fake: FakeMastodon, tmp_path: Path) -> None:
    jack = fake.user("jack")
    post = fake.post(jack, "@dreambot", photo=photo())
    reset = datetime.fromtimestamp(int(time.time()) + 120, UTC)
    fake.fail("GET", "/api/v1/notifications", 429, {"X-RateLimit-Reset": reset.isoformat()})
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        with pytest.raises(RateLimited) as limited:
            await adapter.poll_once()
        assert abs(limited.value.reset_at - reset.timestamp()) < 2
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))


async def test_a_rate_limited_answer_waits_in_the_poll_loop_and_goes_out(fake: FakeMastodon, tmp_path: Path) -> None:
    kim = fake.user("kim")
    post = fake.post(kim, "@dreambot", photo=photo())
    reset = datetime.fromtimestamp(int(time.time()) + 30, UTC)
    fake.fail("POST", "/api/v1/statuses", 429, {"X-RateLimit-Reset": reset.isoformat()})
    waits: list[float] = []
    async with mastobot(fake, make_config(tmp_path)) as adapter:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await settled(adapter)
    assert len(fake.replies_by_bot(post)) == 1
    assert any(20 <= wait <= 31 for wait in waits)  # it waited for the reset instead of dropping the answer


async def test_the_poll_loop_backs_off_on_errors_and_records_its_state(fake: FakeMastodon, tmp_path: Path) -> None:
    lee = fake.user("lee")
    post = fake.post(lee, "@dreambot", photo=photo())
    fake.fail("GET", "/api/v1/notifications", 503, times=2)
    waits: list[float] = []
    states: list[str] = []
    async with mastobot(fake, make_config(tmp_path, streaming=False)) as adapter:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            states.append(adapter.status()["state"])
            if fake.replies_by_bot(post):
                adapter._closed = True
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await asyncio.wait_for(adapter._poll_forever(), 10)
        await until(lambda: fake.replies_by_bot(post))
        assert "503" in adapter.status()["last_error"] or "injected" in adapter.status()["last_error"]
    assert states[:2] == ["backing off", "backing off"] and "polling" in states
    assert 2.5 <= waits[0] <= 5 and 5 <= waits[1] <= 10


async def test_the_stream_answers_at_once_and_a_broken_one_falls_back_to_polling(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    rosa = fake.user("rosa")
    async with mastobot(fake, make_config(tmp_path, poll_interval_seconds=3600)) as adapter:
        rests: list[float] = []

        async def sleep(seconds: float) -> None:  # the poll's interval once the stream is gone: noted, then a turn
            rests.append(seconds)
            await asyncio.sleep(0)

        adapter.sleep = sleep
        adapter._task = asyncio.create_task(adapter._poll_forever())
        await until(lambda: fake.streams and adapter.status()["state"] == "streaming")
        post = fake.post(rosa, "@dreambot", photo=photo())
        await until(lambda: fake.replies_by_bot(post))  # woken by the stream: the hour-long interval did not pass
        assert 3600 not in rests  # (the zeros are the upload's "still processing" looks)
        fake.break_streams()
        await until(lambda: "stream" in adapter.status()["last_error"] and 3600 in rests)
        assert adapter.status()["state"] == "polling"
        late = fake.post(rosa, "@dreambot", photo=photo())
        await until(lambda: fake.replies_by_bot(late))  # read by polling alone
        await settled(adapter)
    assert len(fake.replies_by_bot(post)) == 1 and len(fake.replies_by_bot(late)) == 1


async def test_an_instance_without_streaming_is_polled(fake: FakeMastodon, tmp_path: Path) -> None:
    fake.streaming = False
    sam = fake.user("sam")
    async with mastobot(fake, make_config(tmp_path, poll_interval_seconds=1800)) as adapter:
        rests: list[float] = []

        async def sleep(seconds: float) -> None:
            rests.append(seconds)
            await asyncio.sleep(0)

        adapter.sleep = sleep
        adapter._task = asyncio.create_task(adapter._poll_forever())
        await until(lambda: 1800 in rests)
        assert adapter.status()["state"] == "polling" and "stream" in adapter.status()["last_error"]
        post = fake.post(sam, "@dreambot", photo=photo())
        await until(lambda: fake.replies_by_bot(post))
    assert ("/api/v1/streaming/health", 404, "Not found") in fake.refused
    assert ("GET", "/api/v1/streaming/user") not in fake.calls


async def test_uploads_are_paced_to_thirty_per_half_hour() -> None:
    clock = Clock()
    window = RateWindow(30, 1800, clock)
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.now += seconds

    for _ in range(31):
        await window.acquire(sleep)
    assert waited == [1800.0]


# ---------------------------------------------------------------------------------------------- exactly once


async def test_a_lost_answer_is_retried_with_the_same_idempotency_key_and_lands_once(
    fake: FakeMastodon, tmp_path: Path
) -> None:
    may = fake.user("may")
    post = fake.post(may, "@dreambot", photo=photo())
    fake.lose_answer_of_create = 1  # the status is made, but its answer is a 504
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        adapter.sleep = lambda seconds: asyncio.sleep(0)
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await settled(adapter)
        [entry] = [adapter.store.entry(post)]
        assert entry is not None and entry.state == "posted"
    assert len(fake.replies_by_bot(post)) == 1


async def test_a_restart_in_the_middle_of_posting_gives_exactly_one_reply(fake: FakeMastodon, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ned, ola = fake.user("ned"), fake.user("ola")
    lost = fake.post(ned, "@dreambot", photo=photo())
    fake.lose_answer_of_create = 1  # the reply is made, but its answer is lost...
    async with mastobot(fake, config) as adapter:

        async def down(seconds: float) -> None:  # ...and the instance is down for every retry until the restart
            fake.fail("GET", f"/api/v1/statuses/{lost}/context", 503)
            await asyncio.sleep(0)

        adapter.sleep = down
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(lost))
        await settled(adapter)
        assert adapter.store.entry(lost).state == "posting"
    fake.failures.clear()
    fake.idempotency.clear()  # longer ago than the instance keeps keys: only the ledger and the context look remain
    other = fake.post(ola, "@dreambot", photo=photo())
    async with mastobot(fake, config) as adapter:  # restart: reconcile, then read on
        assert adapter.store.entry(lost).state == "posted"
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(other))
        await settled(adapter)
    assert len(fake.replies_by_bot(lost)) == 1 and len(fake.replies_by_bot(other)) == 1


async def test_a_deleted_original_fails_cleanly_and_is_not_retried(fake: FakeMastodon, tmp_path: Path) -> None:
    pia = fake.user("pia")
    post = fake.post(pia, "@dreambot", photo=photo())
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        original = adapter.deliver

        async def delete_first(view):  # type: ignore[no-untyped-def]
            fake.delete(post)  # deleted while the dream was made
            await original(view)

        adapter.deliver = delete_first
        await adapter.poll_once()
        await until(lambda: adapter.store.entry(post) and adapter.store.entry(post).state == "skipped")
        await settled(adapter)
        assert adapter.status()["answers_refused"] == 1
        creates = [call for call in fake.calls if call == ("POST", "/api/v1/statuses")]
        await adapter.reconcile()  # a restart does not try again
        assert [call for call in fake.calls if call == ("POST", "/api/v1/statuses")] == creates
    assert len(creates) == 1 and ("/api/v1/statuses", 404, "Record not found") in fake.refused


async def test_post_to_own_account_posts_once(fake: FakeMastodon, tmp_path: Path) -> None:
    async with mastobot(fake, make_config(tmp_path)) as adapter:
        image = (DATA / "chelsea.png").read_bytes()
        first = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
        second = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
    assert first == second
    [own] = fake.replies_by_bot(None)
    assert own.visibility == "public" and fake.media[own.media_ids[0]].description == "A dreamed cat"


# ---------------------------------------------------------------------------------------------- the fake is strict


async def test_the_instance_limits_decide_how_results_are_fitted(tmp_path: Path) -> None:
    with FakeMastodon(image_size_limit=6000, description_limit=20, max_characters=60) as fake:
        rita = fake.user("rita")
        post = fake.post(rita, "@dreambot", photo=photo(size=(96, 96)))
        async with mastobot(fake, make_config(tmp_path)) as adapter:
            assert adapter.limits.image_bytes == 6000 and adapter.limits.characters == 60
            await adapter.poll_once()
            await until(lambda: fake.replies_by_bot(post))
        [reply] = fake.replies_by_bot(post)
        media = fake.media[reply.media_ids[0]]
        assert len(media.data) <= 6000 and len(media.description) <= 20 and len(reply.text) <= 60
        assert not fake.refused


async def test_the_fake_refuses_what_mastodon_refuses(fake: FakeMastodon) -> None:
    from mastodon import Mastodon, MastodonAPIError, MastodonNotFoundError, MastodonUnauthorizedError

    fake.image_size_limit, fake.description_limit = 1000, 10
    client = Mastodon(access_token=TOKEN, api_base_url=fake.base_url, ratelimit_method="throw")
    loop = asyncio.get_running_loop()

    def refusals() -> list[str]:
        errors = []
        for attempt in (
            lambda: client.media_post(b"x" * 2000, mime_type="image/jpeg"),
            lambda: client.media_post(b"x" * 10, mime_type="image/jpeg", description="far too long a description"),
            lambda: client.status_post("hi", media_ids=["999999"]),
            lambda: client.status_post("hi", media_ids=[str(n) for n in range(5)]),
            lambda: client.status_post("x" * 501),
        ):
            with pytest.raises(MastodonAPIError) as error:
                attempt()
            errors.append(str(error.value))
        processing = client.media_post(b"x" * 10, mime_type="image/jpeg")
        assert processing["url"] is None
        with pytest.raises(MastodonAPIError, match="not finished processing"):
            client.status_post("hi", media_ids=[processing["id"]])
        with pytest.raises(MastodonNotFoundError):
            client.status("424242")
        with pytest.raises(MastodonUnauthorizedError):
            Mastodon(access_token="wrong", api_base_url=fake.base_url).account_verify_credentials()
        first = client.status_post("once", idempotency_key="k1")
        assert client.status_post("once", idempotency_key="k1")["id"] == first["id"]
        return errors

    errors = await loop.run_in_executor(None, refusals)
    assert "file size" in errors[0] and "Description is too long" in errors[1]
    assert "could not be found" in errors[2] and "more than 4" in errors[3] and "character limit" in errors[4]


# ---------------------------------------------------------------------------------------------- configuration


async def test_mastodon_keys_come_from_the_environment_both_or_none() -> None:
    assert not load_config(environ={}).secrets.mastodon.enabled
    config = load_config(environ={"MASTODON_BASE_URL": "https://example.social/", "MASTODON_ACCESS_TOKEN": "tok-123"})
    assert config.secrets.mastodon.enabled and config.secrets.mastodon.base_url == "https://example.social"
    assert "tok-123" not in repr(config.secrets) + repr(config.secrets.mastodon)
    with pytest.raises(ConfigError, match="MASTODON_ACCESS_TOKEN"):
        load_config(environ={"MASTODON_BASE_URL": "https://example.social"})
    with pytest.raises(ConfigError, match=r"https://example\.social"):
        load_config(environ={"MASTODON_BASE_URL": "example.social", "MASTODON_ACCESS_TOKEN": "t"})


async def test_an_unreachable_bluesky_does_not_stop_mastodon(fake: FakeMastodon, tmp_path: Path) -> None:
    """app.py's wiring: each platform starts on its own; one that is down backs off while the other answers."""
    import socket
    from dataclasses import replace

    from bot.app import _start_social
    from bot.config import BlueskyKeys, Secrets
    from bot.service import DreamService

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    secrets = Secrets(
        mastodon=MastodonKeys(fake.base_url, TOKEN),
        bluesky=BlueskyKeys("bot.test", "abcd-efgh-ijkl-mnop", f"http://127.0.0.1:{dead}"),
    )
    config = replace(make_config(tmp_path), secrets=secrets)
    post = fake.post(fake.user("quinn"), "@dreambot", photo=photo())
    service = await DreamService.open(config, Inverting())
    service.start()
    retries: list[float] = []

    async def park(seconds: float) -> None:  # the retry waits: noted, then held until the end of the test
        retries.append(seconds)
        await asyncio.Event().wait()

    started = _start_social(service, config, sleep=park)
    try:
        await until(lambda: fake.replies_by_bot(post) and retries)
        status = await service.status()
        assert status["bluesky"]["state"] == "backing off" and "could not start" in status["bluesky"]["last_error"]
        assert status["mastodon"]["state"] in ("connected", "polling", "streaming")
    finally:
        for adapter, task in started:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await adapter.close()
        await service.close()
    assert len(fake.replies_by_bot(post)) == 1


async def test_a_revoked_token_stops_mastodon_with_a_recorded_reason(fake: FakeMastodon, tmp_path: Path) -> None:
    from dataclasses import replace

    from bot.app import _start_social
    from bot.config import Secrets
    from bot.service import DreamService

    config = replace(make_config(tmp_path), secrets=Secrets(mastodon=MastodonKeys(fake.base_url, "revoked")))
    service = await DreamService.open(config, Inverting())
    retries: list[float] = []

    async def sleep(seconds: float) -> None:
        retries.append(seconds)

    [(adapter, task)] = _start_social(service, config, sleep=sleep)
    try:
        await task  # gives up: a person has to fix the token; retrying would not
        state = adapter.status()
        assert state["state"] == "stopped" and "could not start" in state["last_error"] and not retries
        assert "revoked" not in state["last_error"]  # the token itself is never shown
    finally:
        await adapter.close()
        await service.close()


async def test_block_list_accounts_are_never_answered(fake: FakeMastodon, tmp_path: Path) -> None:
    troll, friend = fake.user("troll"), fake.user("friend")
    blocked = fake.post(troll, "@dreambot", photo=photo())
    welcome = fake.post(friend, "@dreambot", photo=photo())
    async with mastobot(fake, make_config(tmp_path, block_list=["@troll"])) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(welcome))
        await settled(adapter)
    assert not fake.replies_by_bot(blocked)
