"""What survives crashes, restarts and crowds: real `dreambot` processes killed mid-dream, the command line against a
running service, and a burst of many users on one in-process service.

Jobs reach a running service through its web API, or the way a second adapter process would: through the library,
on the same SQLite file and file store (the service notices those at its next poll, within a second).
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from waiting import until

from bot.config import Config, QueueConfig, load_config
from bot.engine import NullEngine
from bot.jobqueue import JobQueue, JobState, QueueLimits, QueueRefused
from bot.options import Command, build_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView
from bot.store import FileStore
from dreamcore.errors import Cancelled

REPO = Path(__file__).resolve().parents[1]
CHELSEA = (REPO / "tests" / "data" / "chelsea.png").read_bytes()

CONFIG = """\
data_dir = "data"
log_level = "info"

[web]
enabled = {web}

[queue]
cooldown_seconds = 0

[worker]
device = "cpu"
progress_interval_seconds = 0.2

[media]
working_side = 160
"""


# ---------------------------------------------------------------------------------------------- helpers


class ServiceProcess:
    """One `dreambot serve` process; its log goes to a file the assertions can quote."""

    def __init__(self, config_path: Path, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "--config", str(config_path), "serve", "--port", "0", *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> str:
        assert self.proc.stdout is not None
        watchdog = threading.Timer(timeout, self.proc.kill)  # a hung start must not hang the test run
        watchdog.start()
        try:
            for line in self.proc.stdout:
                if "DreamBot is running" in line:
                    return line
        finally:
            watchdog.cancel()
        raise AssertionError(f"the service stopped before it was ready:\n{self.log()}")

    def wait_for_url(self) -> str:
        """The page's address, from the ready line ("... open http://127.0.0.1:PORT/ in a browser ...")."""
        return self.wait_ready().split("open ", 1)[1].split(" ", 1)[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(config_path: Path, log_path: Path, *extra: str) -> ServiceProcess:
        started.append(ServiceProcess(config_path, log_path, *extra))
        return started[-1]

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
        if service.proc.stdout is not None:
            service.proc.stdout.close()
        service._log.close()


def write_config(tmp_path: Path, *, web: bool = False) -> tuple[Path, Config]:
    path = tmp_path / "dreambot.toml"
    path.write_text(CONFIG.format(web=str(web).lower()))
    return path, load_config(path)


@asynccontextmanager
async def submitter(config: Config) -> AsyncIterator[DreamService]:
    """The library's submit path on the service's files, without a worker and without recover(): another process's
    view of a running service (opening a DreamService would re-queue the job that service is dreaming)."""
    queue = await JobQueue.open(config.database_path, QueueLimits(per_user=100, cooldown_seconds=0))
    client = DreamService(config, queue, FileStore(config.files_dir), NullEngine())
    try:
        yield client
    finally:
        await client.close()


def web_request(command: Command, user: str, image: bytes | None = None) -> DreamRequest:
    return DreamRequest(command, Requester("web", user, user.upper()), Destination("web"), image=image)


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(config_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------------------------------------- crashes


@pytest.mark.asyncio
async def test_a_dream_killed_midway_finishes_once_after_a_restart(
    tmp_path: Path, processes: Callable[..., ServiceProcess]
) -> None:
    config_path, config = write_config(tmp_path, web=True)
    first = processes(config_path, tmp_path / "first.log")
    url = first.wait_for_url()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")

    async with aiohttp.ClientSession() as http, submitter(config) as client:
        queue = client.queue

        async def post_dream(options: dict[str, str]) -> str:
            form = aiohttp.FormData({"mode": "dream", **options})
            form.add_field("image", CHELSEA, filename="chelsea.png", content_type="image/png")
            async with http.post(f"{url}api/jobs", data=form) as response:
                assert response.status == 201, await response.text()
                return (await response.json())["id"]

        long_id = await post_dream({"octaves": "2", "iterations": "50", "seed": "1"})
        waiting_id = await post_dream({"octaves": "1", "iterations": "2", "seed": "2"})
        long, waiting = await queue.get(long_id), await queue.get(waiting_id)

        async def dreaming() -> bool:
            job = await queue.get(long.id)
            assert job.state in (JobState.QUEUED, JobState.RUNNING), f"{job.state}: {job.error}\n{first.log()}"
            return job.state is JobState.RUNNING and job.progress > 0

        await until(dreaming, 60, "the first dream to make progress")
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        at_kill = await queue.get(long.id)
        assert (at_kill.state, at_kill.attempts) == (JobState.RUNNING, 1)
        assert 0 < at_kill.progress < 1, "the kill must land mid-dream"
        assert (await queue.get(waiting.id)).state is JobState.QUEUED

        second = processes(config_path, tmp_path / "second.log")
        second_url = second.wait_for_url()

        async def both_finished() -> bool:
            return all([(await queue.get(job.id)).finished for job in (long, waiting)])

        await until(both_finished, 120, "both dreams to finish after the restart")
        resumed, served = await queue.get(long.id), await queue.get(waiting.id)
        assert (resumed.state, resumed.attempts, resumed.error) == (JobState.DONE, 2, None), second.log()
        assert (served.state, served.attempts) == (JobState.DONE, 1)
        assert f"recovered job {long.id}" in second.log()

        rows = await queue.all_jobs(limit=100)
        assert sorted(job.id for job in rows) == sorted([long.id, waiting.id])  # no duplicate rows

        result = json.loads(resumed.result or "{}")
        picture = Image.open(io.BytesIO(client.store.get(result["key"])))
        assert picture.size == (160, 106) == (result["width"], result["height"])
        input_key = json.loads(resumed.payload)["image_key"]
        expected = {input_key, result["key"], json.loads(served.result or "{}")["key"]}
        assert len(expected) == 3
        assert set(client.store.all_keys()) == expected  # one result each, nothing half-written left behind
        assert sorted(p.name for p in config.files_dir.rglob("*") if p.is_file()) == sorted(expected)

        async with http.get(f"{second_url}api/jobs/{long.id}") as response:
            view = await response.json()
        assert (view["state"], view["result"]["key"]) == ("done", result["key"])
        async with http.get(f"{second_url}files/{result['key']}") as response:
            assert await response.read() == client.store.get(result["key"])

        assert second.stop() == 0  # SIGTERM: a clean stop


@pytest.mark.asyncio
async def test_a_job_that_keeps_killing_the_worker_is_dropped_with_a_sentence(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", queue=QueueConfig(max_attempts=2, cooldown_seconds=0))
    job_id = ""
    for attempt in (1, 2):  # each time the worker takes the job, then the process dies without a word
        service = await DreamService.open(config, NullEngine())
        if attempt == 1:
            job_id = (await service.submit(web_request(build_command("letters", "CRASH"), "u1"))).id
        claimed = await service.queue.claim()
        assert claimed is not None and (claimed.id, claimed.attempts) == (job_id, attempt)
        await service.close()

    service = await DreamService.open(config, NullEngine())
    told: list[JobView] = []

    async def owner(view: JobView) -> None:
        told.append(view)

    service.add_listener(owner, platform="web")
    try:
        view = await service.view(job_id)
        assert view.state == "failed"
        assert view.error == "This request stopped the dreaming worker 2 times and has been dropped."
        service.start()  # the owner hears of it through the listeners

        async def heard() -> bool:
            return bool(told)

        await until(heard, 5, "the owner to be told")
        assert [(v.id, v.state, v.error) for v in told] == [(job_id, "failed", view.error)]
        assert await service.queue.claim() is None
    finally:
        await service.close()


class Holding(NullEngine):
    """Stands in for a long dream: reports a step every 10 ms until told to stop."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def render(self, command, image, report, should_stop):  # type: ignore[no-untyped-def]
        self.started.set()
        step = 0
        while not should_stop():
            step += 1
            report(min(0.99, step / 1000), f"step {step}", None)
            time.sleep(0.01)
        raise Cancelled()


@pytest.mark.asyncio
async def test_a_clean_stop_is_not_counted_as_a_crash(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", queue=QueueConfig(max_attempts=1, cooldown_seconds=0))
    engine = Holding()
    service = await DreamService.open(config, engine)
    service.start()
    job = await service.submit(web_request(build_command("letters", "DEPLOY"), "u1"))
    assert await asyncio.to_thread(engine.started.wait, 10)
    await service.close()  # what SIGTERM does

    service = await DreamService.open(config, NullEngine())
    try:
        assert (await service.view(job.id)).state == "queued"
    finally:
        await service.close()


# ---------------------------------------------------------------------------------------------- the command line


@pytest.mark.asyncio
async def test_status_and_cancel_from_the_command_line_against_a_running_service(
    tmp_path: Path, processes: Callable[..., ServiceProcess]
) -> None:
    config_path, config = write_config(tmp_path)
    # The null engine never finishes a billion steps by itself: the job stays running until it is cancelled.
    service = processes(config_path, tmp_path / "serve.log", "--engine", "null", "--null-steps", "1000000000")
    service.wait_ready()

    async with submitter(config) as client:
        queue = client.queue
        running = await client.submit(web_request(build_command("letters", "LONG"), "u1"))
        waiting = await client.submit(web_request(build_command("letters", "WAIT"), "u2"))

        async def dreaming() -> bool:
            job = await queue.get(running.id)
            return job.state is JobState.RUNNING and job.progress > 0

        await until(dreaming, 30, "the job to run")

        status = cli(config_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert (data["jobs"]["running"], data["jobs"]["queued"]) == (1, 1)
        active = data["active"]
        assert [(row["id"], row["state"]) for row in active] == [(running.id, "running"), (waiting.id, "queued")]
        assert active[0]["progress_text"].startswith("step ") and active[0]["user"] == "web:u1"
        assert active[1]["position"] == 0

        cancelled = cli(config_path, "cancel", waiting.id)
        assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"Job {waiting.id}: cancelled.")
        assert (await queue.get(waiting.id)).state is JobState.CANCELLED

        stopping = cli(config_path, "cancel", running.id)
        assert (stopping.returncode, stopping.stdout.strip()) == (0, f"Job {running.id}: stopping at its next step.")

        async def stopped() -> bool:
            return (await queue.get(running.id)).state is JobState.CANCELLED

        await until(stopped, 30, "the running job to stop")  # the service learns it when it stores progress

        again = cli(config_path, "cancel", running.id)
        assert again.returncode == 1 and "already finished" in again.stderr
        unknown = cli(config_path, "cancel", "no-such-job")
        assert unknown.returncode == 1 and "can't find" in unknown.stderr

        after = json.loads(cli(config_path, "status", "--json").stdout)
        assert after["active"] == [] and after["jobs"]["cancelled"] == 2

    assert service.stop() == 0


# ---------------------------------------------------------------------------------------------- a crowd


@pytest.mark.asyncio
async def test_a_burst_from_twenty_users_is_capped_fair_and_answered_once(tmp_path: Path) -> None:
    """200 requests at once, 10 from each of 20 people: the first person's 10 arrive first, the rest in a random
    order. The burst lands before the worker starts, so which ones the cap refuses is known exactly; the refused
    ones then retry while the worker drains the queue."""
    users = [f"u{n:02}" for n in range(20)]
    rest = [(user, n) for user in users[1:] for n in range(10)]
    random.Random(7).shuffle(rest)
    order = [(users[0], n) for n in range(10)] + rest
    assert len({user for user, _ in rest[:140]}) == 19  # everyone has something among the first 150

    config = Config(data_dir=tmp_path / "data", queue=QueueConfig(per_user=10, cooldown_seconds=0, global_cap=150))
    service = await DreamService.open(config, NullEngine(steps=0))
    done_order: list[JobView] = []

    async def listen(view: JobView) -> None:
        if view.state == "done":
            done_order.append(view)

    service.add_listener(listen)

    def request(user: str, n: int) -> DreamRequest:
        seed = users.index(user) * 100 + n  # a seed of its own: no answers from the cache
        return web_request(build_command("letters", "HI", {"seed": seed}), user)

    async def submit(user: str, n: int) -> JobView | QueueRefused:
        try:
            return await service.submit(request(user, n))
        except QueueRefused as refused:
            return refused

    try:
        outcomes = await asyncio.gather(*(submit(user, n) for user, n in [*order, (users[0], 10)]))
        *burst, eleventh = outcomes
        accepted = {order[i]: o for i, o in enumerate(burst) if isinstance(o, JobView)}
        refused = [(order[i], o) for i, o in enumerate(burst) if isinstance(o, QueueRefused)]

        assert list(accepted) == order[:150]
        assert len(refused) == 50
        for _, refusal in refused:
            assert refusal.reason == "queue_full" and refusal.retry_after > 0
            assert refusal.message.startswith("The queue is full right now; please try again in ")
        assert isinstance(eleventh, QueueRefused) and eleventh.reason == "user_limit"
        assert eleventh.message == "You already have 10 dreams waiting; wait for one to finish or cancel one."
        assert (await service.queue.counts())[JobState.QUEUED] == 150

        service.start()

        async def retry(key: tuple[str, int]) -> JobView:
            while True:
                outcome = await submit(*key)
                if isinstance(outcome, JobView):
                    return outcome
                assert outcome.reason == "queue_full", outcome.message
                await asyncio.sleep(0.01)

        async with asyncio.timeout(120):
            retried = await asyncio.gather(*(retry(key) for key, _ in refused))
            accepted.update(zip((key for key, _ in refused), retried, strict=True))
            ids = {view.id for view in accepted.values()}
            assert len(ids) == 200

            async def all_done() -> bool:
                return (await service.queue.counts())[JobState.DONE] == 200

            await until(all_done, 120, "every job to finish")
            await asyncio.sleep(0.1)  # the last notifications
    finally:
        await service.close()

    first_round = [view.requester.lower() for view in done_order[:20]]
    assert sorted(first_round) == users, "someone waited behind another person's whole batch"
    answers = collections.Counter(view.id for view in done_order)
    assert set(answers) == ids and set(answers.values()) == {1}  # every job answered, none twice
    per_user = collections.Counter(view.requester.lower() for view in done_order)
    assert per_user == dict.fromkeys(users, 10)
