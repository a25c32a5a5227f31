"""DreamService in-process: a real SQLite file and file store in tmp_path, the real engine or a stand-in for it.

Engines here are the only doubles: the engine is the service's boundary with dreamcore, and a stand-in that waits,
fails or counts makes cancellation, time limits and retries testable in milliseconds.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from waiting import until

from bot.config import Config, MediaConfig, QueueConfig, ResultsConfig, WorkerConfig
from bot.engine import DreamcoreEngine, Engine, NullEngine, Rendered
from bot.jobqueue import JobNotFound, JobQueue, JobState, PermissionDenied
from bot.media import MediaError
from bot.options import Command, OptionError, build_command, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView
from dreamcore.errors import Cancelled, DreamError

DATA = Path(__file__).parent / "data"
CHELSEA = (DATA / "chelsea.png").read_bytes()  # 451x300
COFFEE = (DATA / "coffee.png").read_bytes()
SMALL_DREAM = "octaves=1 iterations=4 seed=1"
HOLD = 7777  # a seed that makes the Holding engine wait


def make_config(tmp_path: Path, **sections: object) -> Config:
    base = {
        "queue": QueueConfig(per_user=50, cooldown_seconds=0),
        "worker": WorkerConfig(device="cpu", progress_interval_seconds=0),
        "media": MediaConfig(working_side=96),
    }
    return Config(data_dir=tmp_path / "data", **{**base, **sections})  # type: ignore[arg-type]


@asynccontextmanager
async def opened(config: Config, engine: Engine, *, start: bool = True) -> AsyncIterator[DreamService]:
    service = await DreamService.open(config, engine)
    if start:
        service.start()
    try:
        yield service
    finally:
        await service.close()


def dream(text: str = SMALL_DREAM, *, user: str = "u1", image: bytes = CHELSEA, platform: str = "web") -> DreamRequest:
    return DreamRequest(
        parse_command(text, has_image=True), Requester(platform, user, user.upper()), Destination(platform), image=image
    )


def drawing(command: Command, *, user: str = "u1", platform: str = "web") -> DreamRequest:
    return DreamRequest(command, Requester(platform, user, user.upper()), Destination(platform))


async def finished(service: DreamService, job_id: str, timeout: float = 60.0) -> JobView:
    """Follow a job until it ends; its last view."""
    async with asyncio.timeout(timeout):
        async for view in service.subscribe(job_id):
            last = view
    return last


class Heard:
    """A listener that keeps every view it is given, per job."""

    def __init__(self) -> None:
        self.views: list[JobView] = []

    async def __call__(self, view: JobView) -> None:
        self.views.append(view)

    def states(self, job_id: str) -> list[str]:
        """The job's states in the order heard, repeats (progress updates) folded."""
        states: list[str] = []
        for view in self.views:
            if view.id == job_id and (not states or states[-1] != view.state):
                states.append(view.state)
        return states


class Holding(NullEngine):
    """Stands in for a long dream: a job whose seed is HOLD reports a step every 10 ms until released or stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()
        self.renders = 0

    def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
        self.renders += 1
        if command.options.get("seed") == HOLD:
            self.started.set()
            step = 0
            while not self.release.wait(0.01):
                if should_stop():
                    raise Cancelled()
                step += 1
                report(min(0.99, step / 1000), f"step {step}", None)
        return super().render(command, image, report, should_stop)


class WarmedUp(NullEngine):
    """NullEngine that says when the worker has warmed it up (the worker then waits for work)."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed = threading.Event()

    def warm_up(self) -> None:
        super().warm_up()
        self.warmed.set()


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


# ---------------------------------------------------------------------------------------------- the real engine


@pytest.mark.asyncio
async def test_real_dream_end_to_end_then_cache(tmp_path: Path) -> None:
    heard = Heard()
    previews: list[bytes] = []

    async def watch_previews(view: JobView) -> None:
        # Taken the moment a progress view is published: the preview must be there while the job runs.
        if view.state == "running" and view.progress > 0 and view.id in service.previews:
            previews.append(service.previews[view.id])

    async with opened(make_config(tmp_path), DreamcoreEngine("cpu"), start=False) as service:
        service.add_listener(heard)
        service.add_listener(watch_previews)
        queued = await service.submit(dream())
        assert (queued.state, queued.position, queued.cached, queued.requester) == ("queued", 0, False, "U1")
        assert (queued.mode, queued.options) == ("dream", {"octaves": 1, "iterations": 4, "seed": 1})

        followed: list[JobView] = []

        async def follow() -> None:
            async for view in service.subscribe(queued.id):
                followed.append(view)

        following = asyncio.create_task(follow())
        while not followed:  # the subscriber has seen the queued state before the worker starts
            await asyncio.sleep(0.01)
        service.start()
        async with asyncio.timeout(60):
            await following

        states = [view.state for view in followed]
        assert states[0] == "queued" and states[-1] == "done"
        running = [view for view in followed if view.state == "running"]
        assert running, states
        fractions = [view.progress for view in running]
        assert fractions == sorted(fractions) and fractions[-1] > 0
        assert any(view.has_preview for view in running)
        assert previews and Image.open(io.BytesIO(previews[0])).format == "JPEG"
        assert service.previews == {}  # dropped once the job ended
        assert heard.states(queued.id) == ["queued", "running", "done"]

        done = followed[-1]
        assert done.result is not None and done.error is None and done.progress == 1.0
        key = done.result["key"]
        assert service.store.exists(key)
        result = png(service.store.get(key))
        assert result.size == (96, 64) == (done.result["width"], done.result["height"])
        request = await service.request_of(done.id)
        assert request.image_key is not None
        original = png(service.store.get(request.image_key))
        assert original.size == (96, 64)
        change = np.abs(np.asarray(result.convert("RGB"), float) - np.asarray(original.convert("RGB"), float))
        assert change.mean() > 2.0  # it dreamed, rather than handing the photo back

        dreams_so_far = len(service.worker.dream_seconds)
        again = await service.submit(dream(user="u2"))
        assert (again.state, again.cached, again.result) == ("done", True, done.result)
        assert again.id != done.id
        await until(lambda: _heard_done(heard, again.id), what="the cached answer's announcement")
        assert len(service.worker.dream_seconds) == dreams_so_far  # the engine did not run
        assert heard.states(again.id) == ["done"]

        other_seed = await service.submit(dream(SMALL_DREAM.replace("seed=1", "seed=2")))
        assert (other_seed.state, other_seed.cached) == ("queued", False)
        other = await finished(service, other_seed.id)
        assert other.state == "done" and not other.cached
        assert other.result is not None and other.result["key"] != key
        assert len(service.worker.dream_seconds) == dreams_so_far + 1


@pytest.mark.asyncio
async def test_real_drawing_mode(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path), DreamcoreEngine("cpu")) as service:
        command = parse_command("visualize banana size=128 steps=16", has_image=False)
        view = await finished(service, (await service.submit(drawing(command))).id, timeout=120)
        assert view.state == "done", view.error
        assert view.result is not None
        assert png(service.store.get(view.result["key"])).size == (128, 128)
        assert "banana" in view.result["caption"]


# ---------------------------------------------------------------------------------------------- engine errors


@pytest.mark.asyncio
async def test_engine_crash_is_retried_then_failed_and_others_are_served(tmp_path: Path) -> None:
    heard = Heard()
    async with opened(make_config(tmp_path), NullEngine(fail_on="BOOM"), start=False) as service:
        service.add_listener(heard)
        boom = await service.submit(drawing(build_command("letters", "BOOM")))
        before = await service.submit(drawing(build_command("letters", "HI"), user="u2"))
        service.start()
        failed = await finished(service, boom.id)
        after = await service.submit(drawing(build_command("letters", "HELLO")))

        assert failed.state == "failed"
        assert failed.error is not None
        assert "failed 3 times" in failed.error and "the null engine was told to fail" in failed.error
        assert failed.error.endswith("Try another image or settings.")
        assert (await service.queue.get(boom.id)).attempts == 3  # QueueConfig.max_attempts
        assert heard.states(boom.id) == ["queued", "running", "queued", "running", "queued", "running", "failed"]
        assert (await finished(service, before.id)).state == "done"
        assert (await finished(service, after.id)).state == "done"


@pytest.mark.asyncio
async def test_a_dream_error_is_final_at_once(tmp_path: Path) -> None:
    class Refusing(NullEngine):
        def render(self, command, image, report, should_stop) -> Rendered:  # type: ignore[no-untyped-def]
            raise DreamError("That class cannot be drawn with this network; pick another.")

    async with opened(make_config(tmp_path), Refusing()) as service:
        view = await finished(service, (await service.submit(drawing(build_command("letters", "NO")))).id)
        assert (view.state, view.error) == ("failed", "That class cannot be drawn with this network; pick another.")
        assert (await service.queue.get(view.id)).attempts == 1


# ---------------------------------------------------------------------------------------------- cancelling


def held(user: str = "u1", text: str = "WAIT") -> DreamRequest:
    return drawing(build_command("letters", text, {"seed": HOLD}), user=user)


async def wait_started(engine: Holding) -> None:
    assert await asyncio.to_thread(engine.started.wait, 10), "the held job never started"


@pytest.mark.asyncio
async def test_owner_cancels_a_running_job(tmp_path: Path) -> None:
    engine = Holding()
    async with opened(make_config(tmp_path), engine) as service:
        job = await service.submit(held())
        waiting = await service.submit(drawing(build_command("letters", "NEXT")))
        await wait_started(engine)

        asked = await service.cancel(job.id, by_user="web:u1")
        assert asked.state in ("running", "cancelled")
        view = await finished(service, job.id)
        assert (view.state, view.error) == ("cancelled", "Cancelled.")
        assert view.result is None
        assert (await finished(service, waiting.id)).state == "done"  # the worker goes on


@pytest.mark.asyncio
async def test_cancel_by_someone_else_is_refused(tmp_path: Path) -> None:
    engine = Holding()
    async with opened(make_config(tmp_path), engine) as service:
        job = await service.submit(held())
        await wait_started(engine)
        with pytest.raises(PermissionDenied, match="Only the person who asked"):
            await service.cancel(job.id, by_user="web:u2")
        admin = await service.cancel(job.id, by_user="web:u2", admin=True)
        assert admin.id == job.id
        assert (await finished(service, job.id)).state == "cancelled"


@pytest.mark.asyncio
async def test_cancel_from_a_second_connection_stops_the_running_job(tmp_path: Path) -> None:
    """Like `dreambot cancel`: only the database row changes; the worker learns it when it stores progress."""
    engine = Holding()
    config = make_config(tmp_path)
    async with opened(config, engine) as service:
        job = await service.submit(held())
        await wait_started(engine)
        async with await JobQueue.open(config.database_path) as other:
            asked = await other.cancel(job.id)
            assert asked.state is JobState.RUNNING and asked.cancel_requested
        view = await finished(service, job.id, timeout=10)
        assert view.state == "cancelled"
        assert not engine.release.is_set()  # it stopped because it was told to, not because it was let go


@pytest.mark.asyncio
async def test_a_queued_job_cancelled_never_runs(tmp_path: Path) -> None:
    engine = Holding()
    async with opened(make_config(tmp_path), engine) as service:
        first = await service.submit(held())
        await wait_started(engine)
        second = await service.submit(drawing(build_command("letters", "SKIP"), user="u2"))
        assert (await service.cancel(second.id, by_user="web:u2")).state == "cancelled"
        engine.release.set()
        assert (await finished(service, first.id)).state == "done"
        # A job queued after the cancelled one: once it is done, the worker has passed the cancelled one by.
        third = await service.submit(drawing(build_command("letters", "LAST"), user="u3"))
        assert (await finished(service, third.id)).state == "done"
        assert engine.renders == 2  # the first and the third
        assert (await service.view(second.id)).state == "cancelled"


@pytest.mark.asyncio
async def test_time_limit_fails_the_job_with_a_sentence(tmp_path: Path) -> None:
    config = make_config(tmp_path, worker=WorkerConfig(device="cpu", time_limit_seconds=0.5))
    engine = Holding()
    async with opened(config, engine) as service:
        started = time.monotonic()
        view = await finished(service, (await service.submit(held())).id, timeout=10)
        assert time.monotonic() - started >= 0.5
        assert view.state == "failed"
        assert view.error is not None
        assert view.error.startswith("This dream took longer than") and "try fewer octaves" in view.error
        assert (await service.queue.get(view.id)).attempts == 1  # not retried: it would only time out again
        engine.release.set()
        assert (await finished(service, (await service.submit(drawing(build_command("letters", "OK")))).id)).state == (
            "done"
        )


# ---------------------------------------------------------------------------------------------- bad inputs


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height: a decompression bomb that costs nothing to make."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


BAD_UPLOADS = {
    "empty": (b"", "The file is empty"),
    "text": (b"a shopping list, not a picture\n", "not an image I can read"),
    "truncated": (CHELSEA[: len(CHELSEA) // 2], "damaged or incomplete"),
    "bomb": (png_claiming(10_000, 10_000), "100 megapixels); the limit is 50 megapixels"),
    "huge bomb": (png_claiming(30_000, 30_000), "the limit is 50 megapixels"),
}


async def assert_nothing_kept(service: DreamService) -> None:
    assert await service.queue.all_jobs() == []
    assert service.store.all_keys() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("name", BAD_UPLOADS)
async def test_a_bad_upload_is_refused_with_a_sentence_and_nothing_kept(tmp_path: Path, name: str) -> None:
    data, words = BAD_UPLOADS[name]
    config = make_config(tmp_path, media=MediaConfig(working_side=96, max_megapixels=50))
    async with opened(config, NullEngine()) as service:
        with pytest.raises(MediaError) as refused:
            await service.submit(dream(image=data))
        assert words in str(refused.value) and str(refused.value).endswith(".")
        await assert_nothing_kept(service)
        good = await finished(service, (await service.submit(dream())).id)
        assert good.state == "done"


@pytest.mark.asyncio
async def test_an_upload_over_the_size_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path, media=MediaConfig(max_upload_mb=0.01)), NullEngine()) as service:
        with pytest.raises(
            MediaError, match=r"That file is [\d.]+ [KM]B; the limit is [\d.]+ KB\. Send a smaller photo\."
        ):
            await service.submit(dream(image=CHELSEA))
        await assert_nothing_kept(service)
        small = io.BytesIO()
        Image.new("RGB", (32, 32), (10, 200, 30)).save(small, "PNG")
        assert (await finished(service, (await service.submit(dream(image=small.getvalue()))).id)).state == "done"


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def two_frame_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def rotated_jpeg() -> bytes:
    """Stored 64 wide with red on the left; EXIF orientation 6 means: turn it right, so red is on top."""
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif, quality=95)


def sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return encoded(image, "PNG")


async def stored_input(service: DreamService, job_id: str) -> Image.Image:
    request = await service.request_of(job_id)
    assert request.image_key is not None
    return png(service.store.get(request.image_key))


@pytest.mark.asyncio
async def test_unusual_but_valid_uploads_are_accepted_and_normalised(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path), NullEngine()) as service:
        gif = await finished(service, (await service.submit(dream(image=two_frame_gif()))).id)
        assert gif.state == "done"
        first_frame = await stored_input(service, gif.id)
        assert first_frame.size == (40, 30) and first_frame.convert("RGB").getpixel((5, 5)) == (255, 0, 0)

        upright = await finished(service, (await service.submit(dream(image=rotated_jpeg()))).id)
        assert upright.state == "done"
        stored = (await stored_input(service, upright.id)).convert("RGB")
        assert stored.size == (32, 64)
        top, bottom = stored.getpixel((16, 8)), stored.getpixel((16, 56))
        assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
        assert "exif" not in stored.info

        cmyk_red = encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG")
        cmyk = await finished(service, (await service.submit(dream(image=cmyk_red))).id)
        assert cmyk.state == "done"
        red = (await stored_input(service, cmyk.id)).convert("RGB").getpixel((5, 5))
        assert red[0] > 200 and red[1] < 60 and red[2] < 60

        deep = await finished(service, (await service.submit(dream(image=sixteen_bit_png()))).id)
        assert deep.state == "done"
        ramp = await stored_input(service, deep.id)
        assert ramp.mode == "RGB" and ramp.getpixel((0, 0))[0] < 5 and ramp.getpixel((39, 29))[0] > 250


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("layer=blok9", "Did you mean 'block9'"),
        ("octaves=99", "octaves must be between 1 and 8 (got 99)."),
        ("iterations=many", "iterations needs a whole number (got 'many'), e.g. iterations=10."),
        ("octave=3", "Did you mean octaves? Its options: preset, network, layer, octaves, iterations, strength, seed."),
        ("preset=wild", "try one of subtle, patterns, default, deep, nightmare."),
    ],
)
def test_bad_options_are_answered_with_the_valid_names(text: str, words: str) -> None:
    with pytest.raises(OptionError) as refused:
        parse_command(text, has_image=True)
    assert words in str(refused.value)


# ---------------------------------------------------------------------------------------------- expiry


def backdate(service: DreamService, key: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(service.store.path(key), (when, when))


@pytest.mark.asyncio
async def test_expiry_removes_old_rows_then_unreferenced_files_after_the_grace_period(tmp_path: Path) -> None:
    engine = Holding()
    config = make_config(tmp_path, results=ResultsConfig(keep_days=0))
    async with opened(config, engine) as service:
        old = await finished(service, (await service.submit(dream())).id)
        assert old.state == "done" and old.result is not None
        old_input = (await service.request_of(old.id)).image_key
        old_result = old.result["key"]
        running = await service.submit(dream(f"seed={HOLD}", image=COFFEE))
        await wait_started(engine)
        running_input = (await service.request_of(running.id)).image_key
        stray_young = service.store.put(b"an upload whose job row is not written yet", "png")
        stray_old = service.store.put(b"an upload whose job never came", "png")
        backdate(service, stray_old, 7200)
        assert len({old_input, old_result, running_input, stray_young, stray_old}) == 5

        assert await service.expire() == 1
        with pytest.raises(JobNotFound):
            await service.queue.get(old.id)
        assert (await service.view(running.id)).state == "running"
        kept = set(service.store.all_keys())
        # The expired job's files go with it; an unreferenced file younger than the grace period (an upload
        # whose row is not written yet) stays; old strays go.
        assert kept == {running_input, stray_young}

        await service._collect_garbage(grace_seconds=0)
        assert set(service.store.all_keys()) == {running_input}  # still referenced by the running job

        engine.release.set()
        assert (await finished(service, running.id)).state == "done"


@pytest.mark.asyncio
async def test_finished_jobs_younger_than_keep_days_stay(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path, results=ResultsConfig(keep_days=1)), NullEngine()) as service:
        done = await finished(service, (await service.submit(dream())).id)
        keys = set(service.store.all_keys())
        assert len(keys) == 2
        assert await service.expire() == 0
        await service._collect_garbage(grace_seconds=0)
        assert set(service.store.all_keys()) == keys
        assert (await service.view(done.id)).state == "done"


async def three_done_jobs(service: DreamService) -> list[JobView]:
    views = []
    for image in (CHELSEA, COFFEE, (DATA / "rocket.jpg").read_bytes()):
        views.append(await finished(service, (await service.submit(dream(image=image))).id))
    assert [view.state for view in views] == ["done"] * 3
    return views


async def job_files(service: DreamService, view: JobView) -> set[str]:
    assert view.result is not None
    return {view.result["key"], (await service.request_of(view.id)).image_key or ""}


@pytest.mark.asyncio
async def test_expiry_removes_the_oldest_jobs_while_the_store_is_over_budget(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path), NullEngine()) as service:
        oldest, middle, newest = await three_done_jobs(service)
        for key in service.store.all_keys():
            backdate(service, key, 7200)
        newest_files = await job_files(service, newest)
        budget = sum(service.store.path(key).stat().st_size for key in newest_files) + 100
        service.config = replace(service.config, results=ResultsConfig(max_gb=budget / 1e9))

        assert await service.expire() == 2
        assert set(service.store.all_keys()) == newest_files
        assert (await service.view(newest.id)).state == "done"
        for gone in (oldest, middle):
            with pytest.raises(JobNotFound):
                await service.view(gone.id)


@pytest.mark.asyncio
async def test_expiry_over_budget_with_young_files_keeps_the_newest_job(tmp_path: Path) -> None:
    async with opened(make_config(tmp_path), NullEngine()) as service:
        _, _, newest = await three_done_jobs(service)
        newest_files = await job_files(service, newest)
        budget = sum(service.store.path(key).stat().st_size for key in newest_files) + 100
        service.config = replace(service.config, results=ResultsConfig(max_gb=budget / 1e9))
        await service.expire()
        assert (await service.view(newest.id)).state == "done"
        assert service.store.size_bytes() <= budget


# ---------------------------------------------------------------------------------------------- listeners


@pytest.mark.asyncio
async def test_a_platform_listener_hears_its_own_jobs_only(tmp_path: Path) -> None:
    web, everyone = Heard(), Heard()
    async with opened(make_config(tmp_path), NullEngine(), start=False) as service:
        service.add_listener(web, platform="web")
        service.add_listener(everyone)
        mine = await service.submit(drawing(build_command("letters", "WEB")))
        theirs = await service.submit(drawing(build_command("letters", "CHAT"), user="d1", platform="discord"))
        service.start()
        assert (await finished(service, mine.id)).state == "done"
        assert (await finished(service, theirs.id)).state == "done"

    assert web.states(mine.id) == ["queued", "running", "done"]
    assert {view.id for view in web.views} == {mine.id}
    assert all(view.platform == "web" for view in web.views)
    assert everyone.states(theirs.id) == ["queued", "running", "done"]
    done_views = [view for view in web.views if view.state == "done"]
    assert len(done_views) == 1 and done_views[0].result is not None


@pytest.mark.asyncio
async def test_a_failing_listener_does_not_stop_the_others(tmp_path: Path) -> None:
    heard = Heard()

    async def broken(view: JobView) -> None:
        raise RuntimeError("the chat platform is down")

    async with opened(make_config(tmp_path), NullEngine()) as service:
        service.add_listener(broken)
        service.add_listener(heard)
        job = await service.submit(drawing(build_command("letters", "ON")))
        assert (await finished(service, job.id)).state == "done"
        await until(lambda: _heard_done(heard, job.id), what="the done notification")


async def _heard_done(heard: Heard, job_id: str) -> bool:
    return "done" in heard.states(job_id)


@pytest.mark.asyncio
async def test_listeners_hear_queued_before_running_when_the_worker_is_idle(tmp_path: Path) -> None:
    heard = Heard()
    engine = WarmedUp()
    async with opened(make_config(tmp_path), engine) as service:
        service.add_listener(heard)
        assert await asyncio.to_thread(engine.warmed.wait, 10)  # the worker is ready and waits for work
        jobs = []
        for n in range(5):
            jobs.append(await service.submit(drawing(build_command("letters", "NOW", {"seed": n}))))
            await finished(service, jobs[-1].id)
        await until(lambda: _heard_done(heard, jobs[-1].id), what="the last job's end")
    for job in jobs:
        assert heard.states(job.id) == ["queued", "running", "done"]


@pytest.mark.asyncio
async def test_waiting_people_hear_their_place_move_up(tmp_path: Path) -> None:
    heard = Heard()
    async with opened(make_config(tmp_path), NullEngine(), start=False) as service:
        service.add_listener(heard)
        jobs = [await service.submit(drawing(build_command("letters", "UP"), user=f"u{n}")) for n in range(3)]
        assert [job.position for job in jobs] == [0, 1, 2]
        service.start()
        for job in jobs:
            assert (await finished(service, job.id)).state == "done"
        await until(lambda: _heard_done(heard, jobs[-1].id), what="the last job's end")
    places = [view.position for view in heard.views if view.id == jobs[-1].id and view.state == "queued"]
    places = [place for place in places if place is not None]
    assert places[0] == 2 and min(places) < 2, places


@pytest.mark.asyncio
async def test_an_answer_from_the_cache_is_announced_once(tmp_path: Path) -> None:
    heard = Heard()
    async with opened(make_config(tmp_path), NullEngine()) as service:
        service.add_listener(heard)
        first = await service.submit(drawing(build_command("letters", "ONCE", {"seed": 1})))
        assert (await finished(service, first.id)).state == "done"
        again = await service.submit(drawing(build_command("letters", "ONCE", {"seed": 1}), user="u2"))
        assert again.cached and again.state == "done"
        await until(lambda: _heard_done(heard, again.id), what="the cached answer")
        await asyncio.sleep(0.1)
    assert heard.states(again.id) == ["done"]
