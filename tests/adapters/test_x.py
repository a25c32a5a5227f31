"""The X adapter end to end: tweepy's real Client and our v2 upload code against the strict fake X (tests/fake_x.py).

Below the adapter everything is real: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engine is social_testing.py's stand-in that changes the picture (inverts it; a zoom gives a short GIF).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_x import KEYS, FakeX
from social_testing import DATA, Clock, Inverting, adapter_config, decoded, photo, running, settled
from waiting import until

from bot.adapters.social import Budget, BudgetExhausted, SocialStore
from bot.adapters.x import XAdapter
from bot.config import Config, ConfigError, XConfig, XKeys, load_config

pytestmark = pytest.mark.asyncio


def make_config(tmp_path: Path, **x: object) -> Config:
    return adapter_config(tmp_path, x=XConfig(**x))  # type: ignore[arg-type]


KEYSET = XKeys(KEYS["X_API_KEY"], KEYS["X_API_SECRET"], KEYS["X_ACCESS_TOKEN"], KEYS["X_ACCESS_TOKEN_SECRET"])


def xbot(config: Config, clock: Callable[[], float] | None = None) -> AbstractAsyncContextManager[XAdapter]:
    return running(config, lambda service: XAdapter(service, config.x, KEYSET, clock=clock or time.time))


@pytest.fixture
def fake() -> FakeX:
    with FakeX() as x:
        yield x


# ---------------------------------------------------------------------------------------------- answers


async def test_a_mention_with_a_photo_gets_one_reply_with_the_dream_and_alt_text(fake: FakeX, tmp_path: Path) -> None:
    alice = fake.user("alice")
    original = photo()
    post = fake.post(alice, "@DreamBot deeper", photo=original)
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await adapter.poll_once()  # read again: nothing new, nothing repeated
        await settled(adapter)
    [reply] = fake.replies_by_bot(post)
    [media_id] = reply.media_ids
    media = fake.media[media_id]
    result = decoded(media.data)
    assert result.format in ("PNG", "JPEG")
    source = decoded(original).convert("RGB").resize(result.size)
    assert result.convert("RGB").tobytes() != source.tobytes()
    assert media.alt.startswith("DeepDream of your photo: lite0")
    assert "deep look" in media.alt
    assert not fake.refused


async def test_a_mention_replying_to_a_photo_dreams_that_photo(fake: FakeX, tmp_path: Path) -> None:
    bob, carol = fake.user("bob"), fake.user("carol")
    photo_post = fake.post(bob, "sunset", photo=photo((10, 10, 200)))
    mention = fake.post(carol, "@DreamBot nightmare", reply_to=photo_post)
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(mention))
    [reply] = fake.replies_by_bot(mention)
    assert fake.media[reply.media_ids[0]].size > 0
    assert not fake.replies_by_bot(photo_post)


async def test_a_zoom_goes_through_the_chunked_gif_upload(fake: FakeX, tmp_path: Path) -> None:
    dana = fake.user("dana")
    post = fake.post(dana, "@DreamBot zoom frames=8", photo=photo())
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
    [reply] = fake.replies_by_bot(post)
    media = fake.media[reply.media_ids[0]]
    assert media.media_type == "image/gif" and media.finalised
    assert decoded(media.data).n_frames == 3
    routes = [route for _, route in fake.calls]
    assert "/2/media/upload/initialize" in routes
    assert any(route.endswith("/append") for route in routes) and any(r.endswith("/finalize") for r in routes)


async def test_a_post_without_a_photo_gets_one_how_to_per_person_per_day(fake: FakeX, tmp_path: Path) -> None:
    erin = fake.user("erin")
    first = fake.post(erin, "@DreamBot hello")
    clock = Clock()
    async with xbot(make_config(tmp_path), clock) as adapter:
        await adapter.poll_once()
        second = fake.post(erin, "@DreamBot are you there?")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(first)) == 1 and not fake.replies_by_bot(second)
        assert "with a photo" in fake.replies_by_bot(first)[0].text
        clock.now += 86400
        third = fake.post(erin, "@DreamBot hi again")
        await adapter.poll_once()
        assert len(fake.replies_by_bot(third)) == 1


async def test_a_corrupt_photo_gets_a_short_error_reply(fake: FakeX, tmp_path: Path) -> None:
    frank = fake.user("frank")
    post = fake.post(frank, "@DreamBot", photo=photo()[:200])
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
    [reply] = fake.replies_by_bot(post)
    assert reply.text.startswith("⚠️") and "damaged" in reply.text and len(reply.text) <= 280
    assert not reply.media_ids


async def test_a_hashtag_post_without_a_mention_is_counted_not_answered(fake: FakeX, tmp_path: Path) -> None:
    gina = fake.user("gina")
    post = fake.post(gina, "my cat #deepdream", photo=photo())
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await settled(adapter)
        assert adapter.status()["hashtag_posts_not_answered"] == 1
    assert not fake.replies_by_bot(post)
    assert not fake.refused


async def test_opt_out_gets_one_confirmation_and_is_never_answered_again(fake: FakeX, tmp_path: Path) -> None:
    hank = fake.user("hank")
    first = fake.post(hank, "@DreamBot", photo=photo())
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(first))
        stop = fake.post(hank, "@DreamBot stop", reply_to=fake.replies_by_bot(first)[0].id)
        await adapter.poll_once()
        again = fake.post(hank, "@DreamBot deeper", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
    assert len(fake.replies_by_bot(stop)) == 1
    assert "not answer you again" in fake.replies_by_bot(stop)[0].text
    assert not fake.replies_by_bot(again)


# ---------------------------------------------------------------------------------------------- reading


async def test_mentions_and_search_paginate_and_cursors_survive_a_restart(fake: FakeX, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    users = [fake.user(f"u{i}") for i in range(5)]
    async with xbot(config) as adapter:
        await adapter.poll_once()  # a first start: nothing yet; the cursors start here
        mentions = [fake.post(u, "@DreamBot", photo=photo()) for u in users]  # 5 posts, pages of 2
        tagged = [fake.post(u, "#deepdream @DreamBot", photo=photo()) for u in users[:3]]  # found twice
        await adapter.poll_once()
        await settled(adapter)
    pages = [route for _, route in fake.calls if route.endswith("/mentions")]
    assert len(pages) == 1 + 4  # the first read, then pages of 2, 2, 2 and 2 (8 mentions)
    async with xbot(config) as adapter:
        late = fake.post(users[0], "@DreamBot", photo=photo())
        await adapter.poll_once()
        await settled(adapter)
    for post in [*mentions, *tagged, late]:
        assert len(fake.replies_by_bot(post)) == 1, post


async def test_429_waits_for_the_reset_and_loses_nothing(fake: FakeX, tmp_path: Path) -> None:
    from bot.adapters.x import RateLimited

    ivy = fake.user("ivy")
    post = fake.post(ivy, "@DreamBot", photo=photo())
    reset = int(time.time()) + 120
    fake.fail("/2/users/1000/mentions", 429, {"x-rate-limit-reset": str(reset)})
    async with xbot(make_config(tmp_path)) as adapter:
        with pytest.raises(RateLimited) as limited:
            await adapter.poll_once()
        assert limited.value.reset_at == reset
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))


async def test_503_backs_off_with_jitter_then_answers(fake: FakeX, tmp_path: Path) -> None:
    jack = fake.user("jack")
    post = fake.post(jack, "@DreamBot", photo=photo())
    fake.fail("/2/users/1000/mentions", 503, times=2)
    waits: list[float] = []
    async with xbot(make_config(tmp_path)) as adapter:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) > 2:  # read at last: wait for the answer itself (no spinning through the budget), stop
                await until(lambda: fake.replies_by_bot(post))
                adapter._closed = True
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await asyncio.wait_for(adapter._poll_forever(), 10)
        await until(lambda: fake.replies_by_bot(post))
    assert 2.5 <= waits[0] <= 5 and 5 <= waits[1] <= 10  # doubling, with jitter
    assert len(fake.replies_by_bot(post)) == 1


async def test_a_spent_budget_stops_reading_and_answering_until_the_next_day(fake: FakeX, tmp_path: Path) -> None:
    clock = Clock("2026-03-10T23:00:00")
    config = make_config(tmp_path, daily_budget_dollars=0.03)
    kim = fake.user("kim")
    async with xbot(config, clock) as adapter:
        adapter.budget.charge("read_post", 6)  # $0.03 spent today
        post = fake.post(kim, "@DreamBot", photo=photo())
        reads = len(fake.calls)
        with pytest.raises(BudgetExhausted) as spent:
            await adapter.poll_once()
        assert len(fake.calls) == reads  # not even a read
        assert spent.value.resumes_at == datetime(2026, 3, 11, tzinfo=UTC).timestamp()
        assert adapter.status()["exhausted"] and adapter.status()["remaining_today"] == 0
        clock.now += 3600
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        assert 0 < adapter.status()["spent_today"] <= 0.03


async def test_a_crash_between_upload_and_reply_gives_exactly_one_reply(fake: FakeX, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    lee, may = fake.user("lee"), fake.user("may")
    posted = fake.post(lee, "@DreamBot", photo=photo())
    lost = fake.post(may, "@DreamBot", photo=photo())
    fake.fail("/2/tweets", 503)  # the first reply is refused before it is made
    fake.drop_answer_of_create = True  # the next one is made, but its answer never comes back
    async with xbot(config) as adapter:
        await adapter.poll_once()
        await settled(adapter)
    # one post got no reply (503), the other got one whose id was lost
    assert sorted(len(fake.replies_by_bot(p)) for p in (posted, lost)) == [0, 1]
    async with xbot(config) as adapter:  # restart: reconcile
        await settled(adapter)
    assert len(fake.replies_by_bot(posted)) == 1 and len(fake.replies_by_bot(lost)) == 1


async def test_post_to_own_account_posts_once(fake: FakeX, tmp_path: Path) -> None:
    async with xbot(make_config(tmp_path)) as adapter:
        image = (DATA / "chelsea.png").read_bytes()
        first = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
        second = await adapter.post_to_own_account(image, "png", "Dream of the day", "A dreamed cat", key="2026-03-10")
    assert first == second
    [own] = fake.replies_by_bot()
    assert own.in_reply_to is None and fake.media[own.media_ids[0]].alt == "A dreamed cat"


# ---------------------------------------------------------------------------------------------- configuration


async def test_x_keys_come_from_the_environment_all_four_or_none(tmp_path: Path) -> None:
    assert not load_config(environ={}).secrets.x.enabled
    config = load_config(environ=dict(KEYS))
    assert config.secrets.x.enabled and "test-api" not in repr(config.secrets)
    with pytest.raises(ConfigError, match="X_ACCESS_TOKEN_SECRET"):
        load_config(environ={k: v for k, v in KEYS.items() if k != "X_ACCESS_TOKEN_SECRET"})


async def test_budget_months_roll_over(tmp_path: Path) -> None:
    clock = Clock("2026-01-31T23:59:00")
    store = SocialStore(tmp_path / "s.sqlite3", "x", clock)
    budget = Budget(store, {"reply": 0.01}, daily=1.0, monthly=0.02)
    budget.charge("reply", 2)
    with pytest.raises(BudgetExhausted) as spent:
        budget.check("reply")
    assert spent.value.resumes_at == datetime(2026, 2, 1, tzinfo=UTC).timestamp()
    clock.now += 120
    budget.check("reply")
    store.close()


# ---------------------------------------------------------------------------------------------- more of X's rules


async def test_a_crash_after_the_reply_before_the_ledger_finds_the_reply_and_posts_no_second(
    fake: FakeX, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    nia = fake.user("nia")
    post = fake.post(nia, "@DreamBot deeper", photo=photo())

    class Crash(Exception):
        """The process dies: the reply exists on X, the ledger never heard of its id."""

    async with xbot(config) as adapter:
        record = adapter.store.update

        def dies_before_recording(post_id: str, **values: object) -> None:
            if values.get("state") == "posted":
                raise Crash()
            record(post_id, **values)

        adapter.store.update = dies_before_recording  # type: ignore[method-assign]
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await settled(adapter)
        assert adapter.store.entry(post).state == "posting"  # type: ignore[union-attr]
    uploads = sum(1 for _, route in fake.calls if route == "/2/media/upload")
    async with xbot(config) as adapter:  # restart: reconcile looks in the conversation first
        await adapter.poll_once()
        await settled(adapter)
        entry = adapter.store.entry(post)
    [reply] = fake.replies_by_bot(post)
    assert entry is not None and (entry.state, entry.reply_id) == ("posted", reply.id)
    assert sum(1 for _, route in fake.calls if route == "/2/media/upload") == uploads  # nothing uploaded again
    assert ("GET", "/2/tweets/search/recent") in fake.calls


async def test_the_block_list_and_nobot_in_a_bio_are_never_answered(fake: FakeX, tmp_path: Path) -> None:
    olga, pete = fake.user("olga"), fake.user("pete")
    quinn = fake.user("quinn", bio="I draw things. #NoBot please")
    rosa = fake.user("rosa")
    posts = {
        "by name": fake.post(olga, "@DreamBot deeper", photo=photo()),
        "by id": fake.post(pete, "@DreamBot deeper", photo=photo()),
        "bio": fake.post(quinn, "@DreamBot deeper", photo=photo()),
        "without a photo": fake.post(olga, "@DreamBot hello"),
    }
    allowed = fake.post(rosa, "@DreamBot deeper", photo=photo())
    async with xbot(make_config(tmp_path, block_list=("@Olga", pete))) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(allowed))
        await settled(adapter)
        assert len(await adapter.service.queue.all_jobs()) == 1  # only rosa's photo was dreamed
    for why, post in posts.items():
        assert not fake.replies_by_bot(post), why


async def test_the_loop_guard_answers_a_conversation_a_few_times_and_never_the_bot_itself(
    fake: FakeX, tmp_path: Path
) -> None:
    sam = fake.user("sam")
    first = fake.post(sam, "@DreamBot", photo=photo())
    own = fake.post(fake.bot_id, "@DreamBot look at this", photo=photo())  # the bot's own post
    async with xbot(make_config(tmp_path, answers_per_conversation=2)) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(first))
        # another bot (or a person) keeps replying in the thread, mentioning us every time
        second = fake.post(sam, "@DreamBot again", reply_to=fake.replies_by_bot(first)[0].id)
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(second))
        third = fake.post(sam, "@DreamBot and again", reply_to=fake.replies_by_bot(second)[0].id)
        await adapter.poll_once()
        await settled(adapter)
        assert adapter.status()["loop_guard"] == 1
    assert not fake.replies_by_bot(third)
    assert not fake.replies_by_bot(own)
    conversation = fake.tweets[first].conversation_id
    assert len([t for t in fake.replies_by_bot() if t.conversation_id == conversation]) == 2


async def test_a_403_other_than_the_reply_rule_skips_that_answer_and_the_rest_go_on(
    fake: FakeX, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    tess, uma = fake.user("tess"), fake.user("uma")
    # e.g. the author blocked the bot, or X takes the post for spam: X answers 403 to this one reply
    refused = fake.post(tess, "@DreamBot", photo=photo())
    fake.fail("/2/tweets", 403)
    async with xbot(config) as adapter:
        await adapter.poll_once()
        await until(lambda: adapter.status().get("answers_refused") == 1)
        # Replies made during the poll itself (a how-to, an error): the first is refused, the next still goes out.
        howto = fake.post(uma, "@DreamBot hi")
        wrong = fake.post(uma, "@DreamBot layer=block99", photo=photo())
        fake.fail("/2/tweets", 403)
        await adapter.poll_once()
        assert len(fake.replies_by_bot(wrong)) == 1
        later = fake.post(uma, "@DreamBot", photo=photo())
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(later))
        await settled(adapter)
        assert adapter.store.entry(refused).state == "skipped"  # type: ignore[union-attr]
        assert adapter.store.entry(howto).state == "skipped"  # type: ignore[union-attr]
        assert adapter.status()["answers_refused"] == 2
    async with xbot(config) as adapter:  # a restart does not try again
        await adapter.poll_once()
        await settled(adapter)
    assert not fake.replies_by_bot(refused) and not fake.replies_by_bot(howto)
    assert len(fake.replies_by_bot(later)) == 1
    assert any("X refused the answer to post" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_spend_shows_in_dreambot_status_and_metrics(
    fake: FakeX, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.adapters.web import create_web_app
    from bot.cli import main

    config_file = tmp_path / "dreambot.toml"
    config_file.write_text('data_dir = "data"\n[x]\ndaily_budget_dollars = 0.5\n', encoding="utf-8")
    config = load_config(config_file, environ=dict(KEYS))
    vera = fake.user("vera")
    post = fake.post(vera, "@DreamBot", photo=photo())
    async with xbot(config) as adapter:
        await adapter.poll_once()
        await until(lambda: fake.replies_by_bot(post))
        await settled(adapter)
        spent = adapter.budget.spent_today()
        client = TestClient(TestServer(create_web_app(adapter.service, config)))
        await client.start_server()
        try:
            metrics = await (await client.get("/metrics")).text()
        finally:
            await client.close()
    # sign-in and the mentions ($0.001 each), the search ($0.005; charged as one read even when empty),
    # the reply ($0.010) and its alt text ($0.005)
    assert spent == pytest.approx(0.022)
    assert f'dreambot_platform_spend_dollars{{platform="x",period="day"}} {spent!r}' in metrics
    remaining = round(0.5 - spent, 4)
    assert f'dreambot_platform_budget_remaining_dollars{{platform="x",period="day"}} {remaining!r}' in metrics
    assert 'dreambot_platform_budget_exhausted{platform="x"} 0' in metrics

    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(main, ["--config", str(config_file), "status"]) == 0
    printed = capsys.readouterr().out
    assert f"X spend: ${spent:.3f} today, ${spent:.3f} this month; ${remaining:.3f} left today" in printed
    assert "test-api" not in printed and "test-access" not in printed  # no key is ever shown


async def test_app_starts_x_when_its_four_keys_are_set(fake: FakeX, tmp_path: Path) -> None:
    from bot.app import run_service
    from bot.config import Secrets, WebConfig

    config = make_config(tmp_path)
    config = Config(
        data_dir=config.data_dir,
        queue=config.queue,
        worker=config.worker,
        media=config.media,
        web=WebConfig(enabled=False),
        secrets=Secrets(x=KEYSET),
    )
    wren = fake.user("wren")
    post = fake.post(wren, "@DreamBot", photo=photo())
    ready = asyncio.Event()
    running = asyncio.create_task(run_service(config, Inverting(), on_ready=lambda _url: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await until(lambda: fake.replies_by_bot(post))  # signed in, polled and answered: nothing else needed
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert ("GET", "/2/users/me") in fake.calls and not fake.refused


async def test_some_x_keys_but_not_all_stop_the_start_naming_the_missing_ones(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in KEYS.items() if k not in ("X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")}
    env.update(PATH="/usr/bin:/bin", HOME=str(tmp_path))
    started = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert started.returncode == 2
    assert "X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET are not set" in started.stderr
    assert "test-api" not in started.stderr + started.stdout


async def test_the_poll_loop_waits_until_the_rate_limit_resets(fake: FakeX, tmp_path: Path) -> None:
    clock = Clock()
    reset = int(clock.now) + 120
    fake.fail("/2/users/1000/mentions", 429, {"x-rate-limit-reset": str(reset)})
    xena = fake.user("xena")
    post = fake.post(xena, "@DreamBot", photo=photo())
    waits: list[tuple[float, str, float | None]] = []
    async with xbot(make_config(tmp_path), clock) as adapter:

        async def sleep(seconds: float) -> None:
            status = adapter.status()
            waits.append((seconds, status["pause_reason"], status["paused_until"]))
            clock.now += seconds
            if len(waits) > 1:  # read at last: wait for the answer itself, then stop the loop
                await until(lambda: fake.replies_by_bot(post))
                adapter._closed = True
            await asyncio.sleep(0)

        adapter.sleep = sleep
        await asyncio.wait_for(adapter._poll_forever(), 10)
    assert waits[0] == (120, "rate limit", reset)  # to the second X named, and said so in the status
    assert waits[1] == (60, "", None)  # then the ordinary interval
    assert len(fake.replies_by_bot(post)) == 1


async def test_wrong_options_get_one_short_reply_and_queue_nothing(
    fake: FakeX, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMCORE_CACHE", str(tmp_path / "cache"))  # no googlenet weights on this bot
    yuri = fake.user("yuri")
    layer = fake.post(yuri, "@DreamBot layer=block99", photo=photo())
    network = fake.post(yuri, "@DreamBot network=googlenet", photo=photo())
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        await adapter.poll_once()  # read again: no second reply
        await settled(adapter)
        assert await adapter.service.queue.all_jobs() == []
    [about_layer] = fake.replies_by_bot(layer)
    assert about_layer.text.startswith("⚠️") and "block99" in about_layer.text and len(about_layer.text) <= 280
    [about_network] = fake.replies_by_bot(network)
    assert about_network.text == "⚠️ googlenet is not installed on this bot; try lite0, lite1 or lite2."


async def test_a_second_stop_gets_no_second_confirmation(fake: FakeX, tmp_path: Path) -> None:
    zoe = fake.user("zoe")
    first = fake.post(zoe, "@DreamBot stop")
    async with xbot(make_config(tmp_path)) as adapter:
        await adapter.poll_once()
        second = fake.post(zoe, "@DreamBot STOP.")
        await adapter.poll_once()
    assert len(fake.replies_by_bot(first)) == 1 and not fake.replies_by_bot(second)
