"""The dream of the day on Mastodon and Bluesky: the real adapters (Mastodon.py and atproto against their strict
fakes) as destinations of the scheduler, wired by ``bot.app.start_schedules`` as the service wires them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bluesky import APP_PASSWORD, HANDLE, IMAGE_LIMIT, FakeBluesky
from fake_mastodon import TOKEN, FakeMastodon
from test_schedule_posts import Seeded

from bot.adapters.bluesky import BlueskyAdapter
from bot.adapters.mastodon import MastodonAdapter
from bot.app import start_schedules
from bot.config import BlueskyKeys, Config, MastodonKeys, MediaConfig, QueueConfig, ScheduleConfig, WorkerConfig
from bot.service import DreamService

pytestmark = pytest.mark.asyncio

SLOT = "2026-03-10T09:00"


async def test_the_dream_of_the_day_posts_once_to_mastodon_and_bluesky(tmp_path: Path) -> None:
    config = Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0),
        worker=WorkerConfig(device="cpu", progress_interval_seconds=0),
        media=MediaConfig(working_side=96),
        schedules=(ScheduleConfig(destinations=("mastodon", "bluesky"), retry_seconds=0.01, retries=3),),
    )
    with FakeMastodon() as mastodon_fake, FakeBluesky() as bluesky_fake:
        service = await DreamService.open(config, Seeded())
        service.start()
        mastodon = MastodonAdapter(
            service, config.mastodon, MastodonKeys(mastodon_fake.base_url, TOKEN), media_check_seconds=0
        )
        bluesky = BlueskyAdapter(service, config.bluesky, BlueskyKeys(HANDLE, APP_PASSWORD, bluesky_fake.base_url))
        try:
            await mastodon.start(poll=False)
            await bluesky.start(poll=False)
            scheduler = await start_schedules(service, config, {"mastodon": mastodon, "bluesky": bluesky})
            try:
                run = await scheduler.run_now("dream-of-the-day", slot=SLOT)
                again = await scheduler.run_now("dream-of-the-day", slot=SLOT)  # the same run: nothing posts twice
                posts = {post.destination: post for post in scheduler.store.posts("dream-of-the-day", SLOT)}
            finally:
                await scheduler.close()
        finally:
            await mastodon.close()
            await bluesky.close()
            await service.close()
    assert run.state == again.state == "done"
    assert {name: post.state for name, post in posts.items()} == {"mastodon": "posted", "bluesky": "posted"}
    [toot] = mastodon_fake.replies_by_bot(None)  # on the bot's own timeline, not a reply
    assert toot.visibility == "public" and run.caption.split("\n")[0] in toot.text
    assert mastodon_fake.media[toot.media_ids[0]].description  # alt text
    assert posts["mastodon"].post_id == toot.id
    [skeet] = bluesky_fake.replies_by_bot(None)
    image = skeet.record["embed"]["images"][0]
    assert image["alt"] and "reply" not in skeet.record and image["image"]["size"] <= IMAGE_LIMIT
    assert not mastodon_fake.refused and not bluesky_fake.refused
