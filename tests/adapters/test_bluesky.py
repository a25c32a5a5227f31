"""The Bluesky adapter end to end: the real ``atproto`` Client against the strict fake XRPC server (fake_bluesky.py).

Below the adapter everything is real: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engine is social_testing.py's stand-in that inverts the photo.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from fake_bluesky import APP_PASSWORD, BOT_DID, HANDLE, IMAGE_LIMIT, TID, FakeBluesky
from PIL import Image
from social_testing import DATA, Clock, adapter_config, decoded, photo, running, settled
from waiting import until

from bot.adapters.bluesky import BlueskyAdapter, RateLimited, SignInFailed, record_key
from bot.config import (
    BlueskyConfig,
    BlueskyKeys,
    Config,
    ConfigError,
    MediaConfig,
    load_config,
)

pytestmark = pytest.mark.asyncio


def make_config(tmp_path: Path, **bluesky: object) -> Config:
    return adapter_config(tmp_path, bluesky=BlueskyConfig(**bluesky))  # type: ignore[arg-type]


def skybot(
    fake: FakeBluesky, config: Config, clock: Callable[[], float] | None = None, password: str = APP_PASSWORD
) -> AbstractAsyncContextManager[BlueskyAdapter]:
    return running(
        config,
        lambda service: BlueskyAdapter(
            service, config.bluesky, BlueskyKeys(HANDLE, password, fake.base_url), clock=clock or time.time
        ),
    )


@pytest.fixture
def fake() -> FakeBluesky:
    with FakeBluesky() as bluesky:
        yield bluesky


def noisy_photo(side: int) -> bytes:
    """A photo that stays large when encoded (noise), to test fitting into 1,000,000 bytes."""
    buffer = io.BytesIO()
    Image.effect_noise((side, side), 120).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- answers


async def test_a_mention_with_a_photo_gets_one_threaded_reply_with_the_dream_alt_and_ratio(
    fake: FakeBluesky, tmp_path: Path
) -> None:
    alice = fake.user("alice")
    original = photo(size=(64, 48))
    post = fake.post(alice, f"@{HANDLE} deeper", photo=original)
    async with skybot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await adapter.poll_once()  # read again: nothing new, nothing repeated
        await settled(adapter)
        assert adapter.status()["state"] == "connected" and adapter.status()["account"] == HANDLE
    [reply] = fake.replies_by_bot(post)
    record = reply.record
    for side in ("root", "parent"):
        assert (record["reply"][side]["uri"], record["reply"][side]["cid"]) == (post.uri, post.cid)
    [image] = record["embed"]["images"]
    assert image["alt"].startswith("DeepDream of your photo: lite0") and "deep look" in image["alt"]
    blob = fake.blobs[image["image"]["ref"]["$link"]]
    result = decoded(blob.data)
    assert (image["aspectRatio"]["width"], image["aspectRatio"]["height"]) == result.size
    assert result.convert("RGB").tobytes() != decoded(original).convert("RGB").resize(result.size).tobytes()
    assert TID.match(reply.rkey)
    assert fake.seen_at == post.indexed_at  # updateSeen told
    assert not fake.refused


async def test_a_reply_in_a_thread_keeps_the_threads_root(fake: FakeBluesky, tmp_path: Path) -> None:
    bob, carol = fake.user("bob"), fake.user("carol")
    root = fake.post(bob, "look at this sunset", photo=photo((10, 10, 200)))
    mention = fake.post(carol, f"@{HANDLE} nightmare", reply_to=root)  # dreams the photo it replies to
    async with skybot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(mention))
    [reply] = fake.replies_by_bot(mention)
    assert reply.record["reply"]["root"]["uri"] == root.uri
    assert reply.record["reply"]["parent"]["uri"] == mention.uri
    assert reply.record["embed"]["images"] and not fake.replies_by_bot(root)


async def test_a_large_result_is_fitted_to_a_million_bytes(fake: FakeBluesky, tmp_path: Path) -> None:
    dana = fake.user("dana")
    post = fake.post(dana, f"@{HANDLE}", photo=noisy_photo(700))
    config = make_config(tmp_path)
    config = Config(
        data_dir=config.data_dir, queue=config.queue, worker=config.worker, media=MediaConfig(working_side=1024)
    )
    async with skybot(fake, config) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post), timeout=30)
    [reply] = fake.replies_by_bot(post)
    blob = fake.blobs[reply.record["embed"]["images"][0]["image"]["ref"]["$link"]]
    assert len(blob.data) <= IMAGE_LIMIT and not fake.refused


async def test_the_fake_refuses_what_bluesky_refuses(fake: FakeBluesky) -> None:
    from atproto import Client, models
    from atproto_client.exceptions import BadRequestError, UnauthorizedError

    def refusals() -> None:
        client = Client(base_url=fake.base_url)
        with pytest.raises(UnauthorizedError):
            client.login(HANDLE, "hunter2-the-real-one")
        client.login(HANDLE, APP_PASSWORD)
        with pytest.raises(BadRequestError, match="BlobTooLarge"):
            client.upload_blob(b"\xff\xd8\xff" + b"x" * IMAGE_LIMIT)
        blob = client.upload_blob(photo()).blob
        no_alt = {
            "$type": "app.bsky.feed.post",
            "text": "hi",
            "createdAt": "2026-03-10T12:00:00Z",
            "embed": {"$type": "app.bsky.embed.images", "images": [{"image": blob.model_dump(by_alias=True)}]},
        }
        with pytest.raises(BadRequestError, match="alt"):
            client.com.atproto.repo.create_record(
                models.ComAtprotoRepoCreateRecord.Data(
                    repo=BOT_DID, collection="app.bsky.feed.post", record=no_alt, validate=False
                )
            )
        half_reply = {**no_alt, "embed": None, "reply": {"root": {"uri": "at://x/app.bsky.feed.post/1"}}}
        del half_reply["embed"]
        with pytest.raises(BadRequestError, match="root"):
            client.com.atproto.repo.create_record(
                models.ComAtprotoRepoCreateRecord.Data(
                    repo=BOT_DID, collection="app.bsky.feed.post", record=half_reply, validate=False
                )
            )
        record = models.AppBskyFeedPost.Record(text="once", created_at="2026-03-10T12:00:00Z")
        key = record_key("same", 1.7e9)
        client.app.bsky.feed.post.create(BOT_DID, record, rkey=key)
        with pytest.raises(BadRequestError, match="already exists"):
            client.app.bsky.feed.post.create(BOT_DID, record, rkey=key)

    await asyncio.get_running_loop().run_in_executor(None, refusals)


async def test_a_post_without_an_image_gets_one_how_to_per_person_per_day(fake: FakeBluesky, tmp_path: Path) -> None:
    erin = fake.user("erin")
    first = fake.post(erin, f"@{HANDLE} hello")
    clock = Clock()
    async with skybot(fake, make_config(tmp_path), clock) as adapter:
        await adapter.poll_once()
        second = fake.post(erin, f"@{HANDLE} are you there?")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(first)) == 1 and not fake.replies_by_bot(second)
        assert "with a photo" in fake.replies_by_bot(first)[0].record["text"]
        clock.now += 86400
        third = fake.post(erin, f"@{HANDLE} hi again")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(third)) == 1


async def test_bad_options_get_a_short_error_reply(fake: FakeBluesky, tmp_path: Path) -> None:
    frank = fake.user("frank")
    post = fake.post(frank, f"@{HANDLE} layer=nosuchlayer", photo=photo())
    async with skybot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
    [reply] = fake.replies_by_bot(post)
    assert reply.record["text"].startswith("⚠️") and len(reply.record["text"]) <= 300
    assert "embed" not in reply.record or reply.record["embed"] is None


async def test_nobot_and_stop_are_respected(fake: FakeBluesky, tmp_path: Path) -> None:
    shy = fake.user("shy", description="birds and trees #nobots")
    gina = fake.user("gina")
    ignored = fake.post(shy, f"@{HANDLE}", photo=photo())
    first = fake.post(gina, f"@{HANDLE}", photo=photo())
    async with skybot(fake, make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(first))
        stop = fake.post(gina, "stop", reply_to=fake.replies_by_bot(first)[0])  # a "reply" notification
        await adapter.poll_once()
        again = fake.post(gina, f"@{HANDLE} deeper", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
        assert adapter.status()["nobot_not_answered"] == 1
    assert not fake.replies_by_bot(ignored) and not fake.replies_by_bot(again)
    assert len(fake.replies_by_bot(stop)) == 1 and "not answer you again" in fake.replies_by_bot(stop)[0].record["text"]


# ---------------------------------------------------------------------------------------------- reading


async def test_notifications_page_until_the_last_seen_and_survive_a_restart(fake: FakeBluesky, tmp_path: Path) -> None:
    fake.page_size = 2
    config = make_config(tmp_path)
    users = [fake.user(f"u{i}") for i in range(5)]
    early = fake.post(users[0], f"@{HANDLE}", photo=photo())
    async with skybot(fake, config) as adapter:
        await adapter.poll_once()  # a first start: the newest page
        await until(lambda: fake.replies_by_bot(early))
        posts = [fake.post(u, f"@{HANDLE}", photo=photo()) for u in users]
        fake.like(users[1], posts[0])  # not a mention: not read
        await adapter.poll_once()
        await settled(adapter)
    async with skybot(fake, config) as adapter:
        late = fake.post(users[0], f"@{HANDLE}", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
    for post in [early, *posts, late]:
        assert len(fake.replies_by_bot(post)) == 1, post.uri
    assert fake.seen_at == late.indexed_at


async def test_429_waits_for_the_reset_and_loses_nothing(fake: FakeBluesky, tmp_path: Path) -> None:
    hank = fake.user("hank")
    post = fake.post(hank, f"@{HANDLE}", photo=photo())
    reset = int(time.time()) + 120
    fake.fail("app.bsky.notification.listNotifications", 429, {"ratelimit-reset": str(reset)})
    async with skybot(fake, make_config(tmp_path)) as adapter:
        with pytest.raises(RateLimited) as limited:
            await adapter.poll_once()
        assert limited.value.reset_at == reset
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))


async def test_a_rate_limited_write_waits_and_goes_out(fake: FakeBluesky, tmp_path: Path) -> None:
    ivy = fake.user("ivy")
    post = fake.post(ivy, f"@{HANDLE}", photo=photo())
    reset = int(time.time()) + 30
    fake.fail("com.atproto.repo.createRecord", 429, {"ratelimit-reset": str(reset)})
    waits: list[float] = []
    async with skybot(fake, make_config(tmp_path)) as adapter:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await settled(adapter)
    assert len(fake.replies_by_bot(post)) == 1 and any(20 <= wait <= 31 for wait in waits)


async def test_the_poll_loop_backs_off_and_records_its_state(fake: FakeBluesky, tmp_path: Path) -> None:
    jack = fake.user("jack")
    post = fake.post(jack, f"@{HANDLE}", photo=photo())
    fake.fail("app.bsky.notification.listNotifications", 503, times=2)
    waits: list[float] = []
    states: list[str] = []
    async with skybot(fake, make_config(tmp_path)) as adapter:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            states.append(adapter.status()["state"])
            if fake.replies_by_bot(post):
                adapter._closed = True
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await asyncio.wait_for(adapter._poll_forever(), 10)
        await until(lambda: fake.replies_by_bot(post))
        assert "Injected" in adapter.status()["last_error"]
    assert states[:2] == ["backing off", "backing off"] and "polling" in states
    assert 2.5 <= waits[0] <= 5 and 5 <= waits[1] <= 10


# ---------------------------------------------------------------------------------------------- the session


async def test_one_login_the_session_is_stored_and_refreshed_across_restarts(tmp_path: Path) -> None:
    with FakeBluesky(access_lifetime=600) as fake:  # under the client's 15-minute margin: refreshed before use
        config = make_config(tmp_path)
        kim = fake.user("kim")
        async with skybot(fake, config) as adapter:
            first = adapter.store.cursor("session")
            await adapter.poll_once()
            assert adapter.store.cursor("session") != first  # the refreshed session was stored
        fake.post(kim, f"@{HANDLE}", photo=photo())
        async with skybot(fake, config) as adapter:
            await adapter.poll_once()
            await settled(adapter)
        assert fake.logins == 1 and fake.refreshes >= 2


async def test_a_revoked_session_is_replaced_by_one_new_login(fake: FakeBluesky, tmp_path: Path) -> None:
    lena = fake.user("lena")
    async with skybot(fake, make_config(tmp_path)) as adapter:
        fake.revoke_sessions()
        post = fake.post(lena, f"@{HANDLE}", photo=photo())
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if fake.replies_by_bot(post):
                adapter._closed = True
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await asyncio.wait_for(adapter._poll_forever(), 10)
        await until(lambda: fake.replies_by_bot(post))
    assert fake.logins == 2 and len(fake.replies_by_bot(post)) == 1


async def test_the_session_string_never_holds_the_password_and_a_wrong_one_is_a_sentence(
    fake: FakeBluesky, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    with pytest.raises(SignInFailed, match="BLUESKY_APP_PASSWORD"):
        async with skybot(fake, config, password="zzzz-zzzz-zzzz-zzzz"):
            pass
    async with skybot(fake, config) as adapter:
        stored = adapter.store.cursor("session") or ""
        assert stored and APP_PASSWORD not in stored
        assert adapter.status()["state"] == "connected"


# ---------------------------------------------------------------------------------------------- exactly once


async def test_a_lost_answer_is_found_by_its_record_key_and_lands_once(fake: FakeBluesky, tmp_path: Path) -> None:
    lee = fake.user("lee")
    post = fake.post(lee, f"@{HANDLE}", photo=photo())
    fake.lose_answer_of_create = 1  # the post is made, but the answer is a 504
    async with skybot(fake, make_config(tmp_path)) as adapter:
        adapter.sleep = lambda seconds: asyncio.sleep(0)
        await adapter.poll_once()
        await until(lambda: adapter.store.entry(post.uri) and adapter.store.entry(post.uri).state == "posted")
        await settled(adapter)
    assert len(fake.replies_by_bot(post)) == 1
    assert not [r for r in fake.refused if r[2] == "InvalidRecord"]


async def test_a_restart_in_the_middle_of_posting_gives_exactly_one_reply(fake: FakeBluesky, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    may, ned = fake.user("may"), fake.user("ned")
    lost = fake.post(may, f"@{HANDLE}", photo=photo())
    fake.lose_answer_of_create = 1  # the reply is made, its answer lost...
    fake.fail("com.atproto.repo.getRecord", 503, times=100)  # ...and every look for it fails until the restart
    async with skybot(fake, config) as adapter:
        adapter.sleep = lambda seconds: asyncio.sleep(0)
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(lost))
        await settled(adapter)
        assert adapter.store.entry(lost.uri).state == "posting"
    fake.failures.clear()
    other = fake.post(ned, f"@{HANDLE}", photo=photo())
    async with skybot(fake, config) as adapter:  # restart: reconcile, then read on
        assert adapter.store.entry(lost.uri).state == "posted"
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(other))
        await settled(adapter)
    assert len(fake.replies_by_bot(lost)) == 1 and len(fake.replies_by_bot(other)) == 1


async def test_a_deleted_original_is_not_answered_and_not_retried(fake: FakeBluesky, tmp_path: Path) -> None:
    olga = fake.user("olga")
    post = fake.post(olga, f"@{HANDLE}", photo=photo())
    async with skybot(fake, make_config(tmp_path)) as adapter:
        original = adapter.deliver

        async def delete_first(view):  # type: ignore[no-untyped-def]
            fake.delete(post)  # deleted while the dream was made
            await original(view)

        adapter.deliver = delete_first
        await adapter.poll_once()
        await until(lambda: adapter.store.entry(post.uri) and adapter.store.entry(post.uri).state == "skipped")
        await settled(adapter)
        await adapter.reconcile()  # a restart does not try again
        assert adapter.status()["originals_deleted"] == 1
    assert "com.atproto.repo.createRecord" not in fake.calls and not fake.replies_by_bot(post)


async def test_post_to_own_account_posts_once(fake: FakeBluesky, tmp_path: Path) -> None:
    async with skybot(fake, make_config(tmp_path)) as adapter:
        image = (DATA / "chelsea.png").read_bytes()
        first = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
        second = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
    assert first == second
    [own] = fake.replies_by_bot(None)
    assert own.record["embed"]["images"][0]["alt"] == "A dreamed cat" and "reply" not in own.record


# ---------------------------------------------------------------------------------------------- configuration


async def test_bluesky_keys_come_from_the_environment_and_must_be_an_app_password() -> None:
    assert not load_config(environ={}).secrets.bluesky.enabled
    config = load_config(environ={"BLUESKY_HANDLE": "@bot.bsky.social", "BLUESKY_APP_PASSWORD": APP_PASSWORD})
    keys = config.secrets.bluesky
    assert keys.enabled and keys.handle == "bot.bsky.social" and keys.service_url == "https://bsky.social"
    assert APP_PASSWORD not in repr(config.secrets) + repr(keys)
    with pytest.raises(ConfigError, match="app password"):
        load_config(environ={"BLUESKY_HANDLE": "bot.bsky.social", "BLUESKY_APP_PASSWORD": "my real password"})
    with pytest.raises(ConfigError, match="BLUESKY_APP_PASSWORD"):
        load_config(environ={"BLUESKY_HANDLE": "bot.bsky.social"})
    own = load_config(
        environ={
            "BLUESKY_HANDLE": "bot.example",
            "BLUESKY_APP_PASSWORD": APP_PASSWORD,
            "BLUESKY_SERVICE_URL": "https://pds.example/",
        }
    )
    assert own.secrets.bluesky.service_url == "https://pds.example"


async def test_dreambot_status_shows_each_adapters_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dreambot status` (another process) reads what the adapters last recorded in the database."""
    import argparse
    from dataclasses import replace

    from bot.adapters.social import SocialStore
    from bot.cli import command_status
    from bot.config import MastodonKeys, Secrets

    config = replace(
        make_config(tmp_path),
        secrets=Secrets(
            mastodon=MastodonKeys("https://example.social", "token"),
            bluesky=BlueskyKeys(HANDLE, APP_PASSWORD, "https://bsky.social"),
        ),
    )
    config.data_dir.mkdir(parents=True)
    await _open_and_close(config.database_path)  # the database `dreambot serve` would have made
    store = SocialStore(config.database_path, "bluesky")
    store.record_state("backing off", "Bluesky answered 503", until=time.time() + 60)
    store.close()
    loop = asyncio.get_running_loop()  # the command runs its own event loop: in a thread of its own here
    assert await loop.run_in_executor(None, command_status, argparse.Namespace(json=True), config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["adapters"]["bluesky"]["state"] == "backing off"
    assert data["adapters"]["bluesky"]["last_error"] == "Bluesky answered 503"
    assert data["adapters"]["mastodon"] == {"state": "not started yet"}
    assert await loop.run_in_executor(None, command_status, argparse.Namespace(json=False), config) == 0
    text = capsys.readouterr().out
    assert "bluesky: backing off (until" in text and "last error: Bluesky answered 503" in text


async def _open_and_close(path: Path) -> None:
    from bot.jobqueue import JobQueue

    queue = await JobQueue.open(path)
    await queue.close()
