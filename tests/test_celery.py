"""Scale-out with the real thing: a private redis-server, real `dreambot worker` processes (Celery, solo pool) and the
bot's core in-process with ``[worker] backend = "celery"``.

The workers run the null engine with a pause per step (``--null-step-seconds``), so a dream lasts as long as a fault
test needs and no longer. Waits wait for what they wait for (a job's state, a worker's heartbeat in Redis); the only
deliberate pause is the length of the Redis outage itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import redis.asyncio

from bot.celery_backend import token_of
from bot.celery_protocol import RESULTS, RESULTS_TAKING, WORKERS, Outcome, b64, redact
from bot.config import Config, ConfigError, MediaConfig, QueueConfig, Secrets, WorkerConfig, load_config
from bot.jobqueue import JobState
from bot.options import parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (scripts/setup.sh)")

DATA = Path(__file__).parent / "data"
CHELSEA = (DATA / "chelsea.png").read_bytes()
HEARTBEAT = 0.3  # seconds between a worker's heartbeats
LEASE = 2.0  # seconds of silence after which the bot gives a dispatch to another worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A private redis-server on a free loopback port, without persistence; it can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password = ""
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + (["--requirepass", self.password] if self.password else []),
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, running and empty for each test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    with contextlib.closing(redis_server.client()) as client:
        client.flushall()
    yield redis_server
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()


class WorkerProcess:
    def __init__(self, name: str, process: subprocess.Popen, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log


class Workers:
    """Real `dreambot worker` subprocesses of one test, stopped at its end."""

    def __init__(self, broker: RedisServer, workdir: Path) -> None:
        self.broker = broker
        self.workdir = workdir
        self.started: list[WorkerProcess] = []

    def start(self, *names: str, steps: int = 4, step_seconds: float = 0.05, extra: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "DREAMBOT_BROKER_URL": self.broker.url}
        env.pop("DREAMBOT_CONFIG", None)
        for name in names:
            log = self.workdir / f"{name}.log"
            engine = ["--engine", "null", "--null-steps", str(steps), "--null-step-seconds", str(step_seconds)]
            command = [sys.executable, "-m", "bot.cli", "worker", "--name", name, "--heartbeat-seconds", str(HEARTBEAT)]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*command, *(extra or engine)], cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.started.append(WorkerProcess(name, process, log))
        for name in names:
            self.wait_registered(name)

    def wait_registered(self, name: str, timeout: float = 60.0) -> dict:
        """Until the worker's heartbeat is in Redis with its network loaded (or known broken)."""
        deadline = time.monotonic() + timeout
        with contextlib.closing(self.broker.client()) as client:
            while time.monotonic() < deadline:
                raw = client.hget(WORKERS, name)
                if raw is not None and json.loads(raw)["state"] in ("ready", "broken"):
                    return json.loads(raw)
                time.sleep(0.05)
        raise AssertionError(f"worker {name} did not come up:\n{self.output(name)}")

    def get(self, name: str) -> WorkerProcess:
        return next(w for w in self.started if w.name == name and w.process.poll() is None)

    def output(self, name: str) -> str:
        return next(w for w in self.started if w.name == name).log.read_text(errors="replace")

    def stop(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
        for worker in self.started:
            worker.process.wait(timeout=30)


@pytest.fixture
def workers(broker: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(broker, tmp_path)
    yield pool
    pool.stop()


def celery_config(tmp_path: Path, broker: RedisServer, **worker: object) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        queue=QueueConfig(per_user=50, cooldown_seconds=0, global_cap=1000),
        worker=WorkerConfig(
            device="cpu", backend="celery", lease_seconds=LEASE, progress_interval_seconds=0.1, **worker
        ),  # type: ignore[arg-type]
        secrets=Secrets(broker_url=broker.url),
    )


class Heard:
    """A listener that keeps every view it is given."""

    def __init__(self) -> None:
        self.views: list[JobView] = []
        self.changed = asyncio.Event()

    async def __call__(self, view: JobView) -> None:
        self.views.append(view)
        self.changed.set()

    def done(self) -> list[str]:
        """Job ids in the order they were heard done (a job heard done twice appears twice)."""
        return [view.id for view in self.views if view.state == "done"]

    def ended(self) -> Counter:
        return Counter(view.id for view in self.views if view.finished)

    async def until(self, condition, timeout: float = 60.0, what: str = "it") -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.5)
        assert condition(), what


@asynccontextmanager
async def bot(
    config: Config, *, start: bool = True, heard: Heard | None = None
) -> AsyncIterator[tuple[DreamService, Heard]]:
    service = await DreamService.open(config)
    heard = heard or Heard()
    service.add_listener(heard)
    if start:
        service.start()
    try:
        yield service, heard
    finally:
        await service.close()


def request(user: str, seed: int, *, image: bytes | None = CHELSEA, text: str = "") -> DreamRequest:
    return DreamRequest(
        parse_command(text or f"octaves=1 iterations=2 seed={seed}", has_image=image is not None),
        Requester("web", user, user.upper()),
        Destination("web"),
        image=image,
    )


def jobs_done(service: DreamService, name: str) -> int:
    """A worker's count of finished dreams, as its last heartbeat told the bot."""
    return next((w["jobs_done"] for w in service.worker.describe() if w["name"] == name), 0)


async def submit_many(service: DreamService, users: int, each: int) -> list[str]:
    ids = []
    for round_ in range(each):
        for user in range(users):
            seed = 1000 * user + round_
            view = await service.submit(request(f"p{user}", seed, image=None, text=f"visualize banana seed={seed}"))
            ids.append(view.id)
    return ids


# ------------------------------------------------------------------------------------------------------------ tests


@needs_redis
@pytest.mark.asyncio
async def test_two_workers_dream_every_job_once_with_progress_and_status(
    workers: Workers, broker: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workers.start("w1", "w2", steps=4, step_seconds=0.05)
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        ids = [(await service.submit(request(f"u{n % 3}", n))).id for n in range(8)]
        await heard.until(lambda: set(heard.done()) == set(ids), what="all eight done")
        assert heard.ended() == Counter(dict.fromkeys(ids, 1)), "each job ends exactly once"
        for job_id in ids:
            job = await service.queue.get(job_id)
            assert job.state is JobState.DONE and job.attempts == 1
            result = json.loads(job.result or "{}")
            assert service.store.get(result["key"]).startswith(b"\x89PNG")  # the worker's picture, stored here
        assert any(v.state == "running" and 0 < v.progress < 1 for v in heard.views), "progress came back"
        # The workers' counts arrive with their heartbeats, a moment after the results themselves.
        await heard.until(lambda: sum(w["jobs_done"] for w in service.worker.describe()) == 8, what="counted")
        status = await service.status()
        by_name = {w["name"]: w for w in status["workers"]}
        assert status["backend"] == "celery" and set(by_name) == {"w1", "w2"}
        assert by_name["w1"]["jobs_done"] > 0 and by_name["w2"]["jobs_done"] > 0, "both workers dreamed"
        assert all(w["pid"] and w["host"] and w["state"] == "ready" for w in by_name.values())

        from bot.adapters.web.metrics import render_service

        page = await render_service(service)
        assert 'dreambot_workers{backend="celery",state="ready"} 2' in page
        assert 'dreambot_backend_queue_depth{backend="celery"} 0' in page

    # `dreambot status --json`, a separate command reading the same database and Redis.
    from bot.cli import main

    (tmp_path / "dreambot.toml").write_text('data_dir = "data"\n[worker]\nbackend = "celery"\n')
    old = os.environ.get("DREAMBOT_BROKER_URL")
    os.environ["DREAMBOT_BROKER_URL"] = broker.url
    try:
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["--config", str(tmp_path / "dreambot.toml"), "status", "--json"]) == 0
    finally:
        os.environ.pop("DREAMBOT_BROKER_URL") if old is None else os.environ.__setitem__("DREAMBOT_BROKER_URL", old)
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"]["done"] == 8
    rows = {row["name"]: row for row in data["workers"]}
    assert set(rows) == {"w1", "w2"}
    assert set(rows["w1"]) == {"name", "host", "pid", "device", "state", "current_job", "jobs_done", "last_heartbeat"}


@needs_redis
@pytest.mark.asyncio
async def test_fairness_holds_across_two_workers(workers: Workers, broker: RedisServer, tmp_path: Path) -> None:
    # Dreams of 0.2 s: a later job could only finish before an earlier one if a worker stalled for a whole dream.
    workers.start("w1", "w2", steps=4, step_seconds=0.05)
    async with bot(celery_config(tmp_path, broker), start=False) as (service, heard):
        # Every job is queued before dreaming starts: 20 people, 10 each, the heaviest user first in line.
        await submit_many(service, users=20, each=10)
        service.start()
        await heard.until(lambda: len(heard.done()) >= 24, what="the first 24 dreams")
        users = {(await service.queue.get(job_id)).user for job_id in heard.done()[:20]}
        assert len(users) == 20, f"the first 20 dreams finished went to {len(users)} people, not all 20"


@needs_redis
@pytest.mark.asyncio
async def test_a_worker_killed_mid_dream_its_job_completes_on_the_other_once(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1", "w2", steps=40, step_seconds=0.05)
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        job_id = (await service.submit(request("u1", 1))).id
        await heard.until(lambda: any(v.id == job_id and v.progress > 0 for v in heard.views), what="dreaming")
        dreamer = next(w["name"] for w in service.worker.describe() if w["current_job"] == job_id)
        other = "w2" if dreamer == "w1" else "w1"
        os.kill(workers.get(dreamer).process.pid, signal.SIGKILL)
        await heard.until(lambda: job_id in heard.done(), what="done elsewhere")
        job = await service.queue.get(job_id)
        assert job.state is JobState.DONE and job.attempts == 2
        assert heard.ended() == Counter({job_id: 1}), "posted once"
        await heard.until(lambda: jobs_done(service, other) == 1, what="counted by the other worker")


@needs_redis
@pytest.mark.asyncio
async def test_cancel_reaches_a_dream_running_on_a_worker(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1", steps=400, step_seconds=0.05)  # 20 seconds unless stopped
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        job_id = (await service.submit(request("u1", 1))).id
        await heard.until(lambda: any(v.id == job_id and v.progress > 0 for v in heard.views), what="dreaming")
        started = time.monotonic()
        await service.cancel(job_id, by_user="web:u1")
        await heard.until(lambda: heard.ended()[job_id] == 1, timeout=15, what="cancelled")
        assert (await service.queue.get(job_id)).state is JobState.CANCELLED
        assert time.monotonic() - started < 10, "the dream stopped at a step rather than running to its end"
        await heard.until(lambda: not any(w["current_job"] for w in service.worker.describe()), what="idle")


@needs_redis
@pytest.mark.asyncio
async def test_redis_stopped_and_started_again_loses_and_doubles_nothing(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1", "w2", steps=10, step_seconds=0.05)
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        ids = [(await service.submit(request(f"u{n % 2}", n))).id for n in range(8)]
        await heard.until(lambda: len(heard.done()) >= 2, what="the first dreams")
        broker.stop()
        await asyncio.sleep(LEASE * 1.5)  # the outage itself: longer than a lease, which must not count it
        broker.start()
        await heard.until(lambda: set(heard.done()) == set(ids), timeout=90, what="all done after the outage")
        assert heard.ended() == Counter(dict.fromkeys(ids, 1)), "nothing lost, nothing doubled"
        for job_id in ids:
            assert (await service.queue.get(job_id)).state is JobState.DONE


@needs_redis
@pytest.mark.asyncio
async def test_a_worker_that_cannot_load_its_network_gets_nothing_then_fails_jobs_with_a_sentence(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    # A real load failure: the real engine asked for CUDA on a machine without it.
    workers.start("broken", extra=("--device", "cuda:0"))
    assert workers.wait_registered("broken")["state"] == "broken"
    workers.start("good", steps=2, step_seconds=0.02)
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        ids = [(await service.submit(request("u1", n))).id for n in range(4)]
        await heard.until(lambda: set(heard.done()) == set(ids), what="done by the good worker")
        await heard.until(lambda: jobs_done(service, "good") == 4, what="counted by the good worker")
        by_name = {w["name"]: w for w in service.worker.describe()}
        assert by_name["broken"]["jobs_done"] == 0 and by_name["broken"]["state"] == "broken"

        workers.get("good").process.terminate()  # a clean stop leaves the registry at once
        workers.get("good").process.wait(timeout=30)
        job_id = (await service.submit(request("u1", 99))).id
        await heard.until(lambda: heard.ended()[job_id] == 1, what="failed after the attempt limit")
        job = await service.queue.get(job_id)
        assert job.state is JobState.FAILED and job.attempts == 3
        assert "could not load its network" in (job.error or "") and "CUDA" in (job.error or "")
        assert (job.error or "").endswith(".") and "3 times" in (job.error or "")


@needs_redis
@pytest.mark.asyncio
async def test_the_bot_restarted_while_workers_dream_gets_each_result_once(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1", "w2", steps=30, step_seconds=0.05)
    config = celery_config(tmp_path, broker)
    heard = Heard()  # one listener across both starts: what people would see
    async with bot(config, heard=heard) as (service, _):
        ids = [(await service.submit(request(f"u{n}", n))).id for n in range(4)]
        await heard.until(
            lambda: len({v.id for v in heard.views if v.state == "running" and v.progress > 0}) == 2, what="two dream"
        )
        dreaming = {v.id for v in heard.views if v.state == "running"} - set(heard.done())
    assert dreaming, "the bot stopped while dreams ran"
    # The bot is down; the workers go on. A new start of the bot takes over the same database.
    async with bot(config, heard=heard) as (service, _):
        await heard.until(lambda: set(heard.done()) == set(ids), timeout=60, what="all four done")
        assert heard.ended() == Counter(dict.fromkeys(ids, 1)), "each result once"
        for job_id in dreaming:
            assert (await service.queue.get(job_id)).attempts == 1, "finished by the first dispatch, not dreamed again"


def test_the_broker_password_is_never_shown() -> None:
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in repr(Secrets(broker_url="redis://:s3cret@h:1/0"))


async def results_taken(broker: RedisServer, timeout: float = 20.0) -> None:
    """Until the bot has taken everything workers (or a test) pushed onto the results list."""
    client = redis.asyncio.Redis.from_url(broker.url)
    try:
        async with asyncio.timeout(timeout):
            while await client.llen(RESULTS) or await client.llen(RESULTS_TAKING):
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


@needs_redis
@pytest.mark.asyncio
async def test_stale_and_late_results_are_dropped(workers: Workers, broker: RedisServer, tmp_path: Path) -> None:
    workers.start("w1", steps=400, step_seconds=0.05)
    async with bot(celery_config(tmp_path, broker)) as (service, heard):
        job_id = (await service.submit(request("u1", 1))).id
        await heard.until(lambda: any(v.id == job_id and v.progress > 0 for v in heard.views), what="dreaming")
        job = await service.queue.get(job_id)
        with contextlib.closing(broker.client()) as client:
            # A result from an earlier attempt (another token): dropped, the job dreams on.
            client.rpush(RESULTS, Outcome(job_id, "0:0.0", "w9", "done", data=b64(b"not a picture")).to_json())
            await results_taken(broker)
            assert (await service.queue.get(job_id)).state is JobState.RUNNING
            await service.cancel(job_id, by_user="web:u1")
            await heard.until(lambda: heard.ended()[job_id] == 1, what="cancelled")
            # The right token, but the job was cancelled meanwhile: dropped too.
            client.rpush(RESULTS, Outcome(job_id, token_of(job), "w1", "done", data=b64(b"late")).to_json())
            await results_taken(broker)
        assert (await service.queue.get(job_id)).state is JobState.CANCELLED
        assert heard.ended() == Counter({job_id: 1})


@needs_redis
@pytest.mark.asyncio
async def test_the_broker_password_never_reaches_a_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: Workers
) -> None:
    server = RedisServer(tmp_path)
    server.password = "s3cret-pass"
    server.url = f"redis://:{server.password}@127.0.0.1:{server.port}/0"
    server.start()
    try:
        pool = Workers(server, tmp_path)
        workers.started = pool.started  # stopped by the fixture
        pool.start("secretive", steps=1, step_seconds=0.01)
        caplog.set_level(logging.DEBUG)
        async with bot(celery_config(tmp_path, server)) as (service, heard):
            job_id = (await service.submit(request("u1", 1))).id
            await heard.until(lambda: job_id in heard.done(), what="done")
        assert "redis://:***@" in caplog.text
        assert server.password not in caplog.text
        assert server.password not in pool.output("secretive")
        assert "127.0.0.1" in pool.output("secretive")  # it did log where it connects
    finally:
        server.stop()


def test_the_celery_backend_needs_a_broker_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "dreambot.toml").write_text('[worker]\nbackend = "celery"\n')
    with pytest.raises(ConfigError, match="DREAMBOT_BROKER_URL is not set"):
        load_config(tmp_path / "dreambot.toml", environ={})
    with pytest.raises(ConfigError, match='"local" or "celery"'):
        (tmp_path / "other.toml").write_text('[worker]\nbackend = "rabbit"\n')
        load_config(tmp_path / "other.toml", environ={})
    with pytest.raises(ConfigError, match="secrets do not belong"):
        (tmp_path / "leaky.toml").write_text('[worker]\nbroker_url = "redis://:pw@h/0"\n')
        load_config(tmp_path / "leaky.toml", environ={})


def test_dreambot_worker_without_a_broker_is_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import main

    monkeypatch.delenv("DREAMBOT_BROKER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["worker", "--device", "cpu"]) == 2
    assert "needs DREAMBOT_BROKER_URL" in capsys.readouterr().err


@needs_redis
@pytest.mark.asyncio
async def test_a_real_lite0_dream_on_a_worker_sends_previews_and_a_picture(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    from PIL import Image

    workers.start("real", extra=("--device", "cpu"))  # the real engine, the packaged lite0 network
    config = celery_config(tmp_path, broker)
    config = replace(config, media=MediaConfig(working_side=96))
    async with bot(config) as (service, heard):
        job_id = (await service.submit(request("u1", 5))).id
        await heard.until(lambda: job_id in heard.ended(), timeout=120, what="the dream")
        job = await service.queue.get(job_id)
        assert job.state is JobState.DONE, job.error
        assert any(v.id == job_id and v.has_preview and v.state == "running" for v in heard.views), "a preview"
        result = json.loads(job.result or "{}")
        picture = Image.open(io.BytesIO(service.store.get(result["key"])))
        assert picture.format == "PNG" and max(picture.size) == 96
        assert "lite0" in result["caption"] and result["settings"]


@needs_redis
@pytest.mark.asyncio
async def test_photos_and_results_over_the_transfer_cap_fail_with_a_sentence(
    workers: Workers, broker: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1", steps=1, step_seconds=0.01)
    config = celery_config(tmp_path, broker, max_transfer_mb=0.00005)  # 52 bytes
    async with bot(config) as (service, heard):
        photo = (await service.submit(request("u1", 1))).id
        drawing = (await service.submit(request("u2", 2, image=None, text="visualize banana seed=2"))).id
        await heard.until(lambda: {photo, drawing} <= set(heard.ended()), what="both refused")
        photo_job, drawing_job = await service.queue.get(photo), await service.queue.get(drawing)
        assert photo_job.state is JobState.FAILED and "too large to send" in (photo_job.error or "")
        assert drawing_job.state is JobState.FAILED
        assert "larger than worker.max_transfer_mb" in (drawing_job.error or "")
        with contextlib.closing(broker.client()) as client:
            assert client.llen(RESULTS) == 0
