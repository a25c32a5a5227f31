"""The X adapter end to end: tweepy's real Client and our v2 upload code against the strict fake X (tests/fake_x.py).

Below the adapter everything is real: DreamService with its SQLite queue and file store in tmp_path, and the
worker. The engine is a small stand-in that changes the picture (inverts it; a zoom gives a short GIF).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_x import KEYS, FakeX
from PIL import Image, ImageOps

from bot.adapters.social import Budget, BudgetExhausted, SocialStore
from bot.adapters.x import XAdapter
from bot.config import Config, ConfigError, MediaConfig, QueueConfig, WorkerConfig, XConfig, XKeys, load_config
from bot.engine import NullEngine, Rendered
from bot.options import Mode

pytestmark = pytest.mark.asyncio

DATA = Path(__file__).parents[1] / "data"


def photo(color: tuple[int, int, int] = (200, 120, 40), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((20, 200, 90), (8, 8, 30, 30))
    image.save(buffer, "JPEG")
    return buffer.getvalue()


class Inverting(NullEngine):
    """Dreams by inverting the photo; a zoom is a three-frame GIF of it."""

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        picture = ImageOps.invert(image.rgb.convert("RGB"))
        if command.mode == Mode.ZOOM:
            buffer = io.BytesIO()
            frames = [picture, picture.rotate(5), picture.rotate(10)]
            frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
            return Rendered(buffer.getvalue(), "gif", picture.width, picture.height, "zoom · 3 frames", {})
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        return Rendered(buffer.getvalue(), "png", picture.width, picture.height, "lite0 block9 · default", {})


class Clock:
    def __init__(self, when: str = "2026-03-10T12:00:00") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def make_config(tmp_path: Path, **x: object) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        media=MediaConfig(working_side=96),
        x=XConfig(**x),  # type: ignore[arg-type]
    )


KEYSET = XKeys(KEYS["X_API_KEY"], KEYS["X_API_SECRET"], KEYS["X_ACCESS_TOKEN"], KEYS["X_ACCESS_TOKEN_SECRET"])


@asynccontextmanager
async def xbot(config: Config, clock: Callable[[], float] | None = None) -> AsyncIterator[XAdapter]:
    from bot.service import DreamService

    service = await DreamService.open(config, Inverting())
    service.start()
    adapter = XAdapter(service, config.x, KEYSET, clock=clock or time.time)
    try:
        await adapter.start(poll=False)
        yield adapter
    finally:
        await adapter.close()
        await service.close()


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for the event itself (checked on every loop turn), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def settled(adapter: XAdapter) -> None:
    """Every queued job finished and its answer delivered."""
    from bot.jobqueue import JobState

    async def busy() -> bool:
        counts = await adapter.service.queue.counts()
        return bool(counts.get(JobState.QUEUED, 0) or counts.get(JobState.RUNNING, 0))

    deadline = time.monotonic() + 10
    while await busy() or any(
        not listener.inbox.empty() or (listener.task and not listener.task.done())
        for listener in adapter.service._listeners
    ):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def fake() -> FakeX:
    with FakeX() as x:
        yield x


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


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
            if fake.replies_by_bot(post):
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
