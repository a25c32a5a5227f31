"""Jobs per second through the Celery backend with one and with two workers, against the local worker.

Everything is real but the dream: a private redis-server on a free loopback port, real `dreambot worker` processes
running the null engine (an 8x8 picture at once), and the bot's core in this process. Each round queues the same
number of jobs before dreaming starts, then times until the last one is stored; the rounds alternate between the
three set-ups and the medians are printed, with the per-job overhead of the Celery path over the local worker.

    .venv/bin/python benchmarks/celery_throughput.py [--jobs 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bot.celery_protocol import WORKERS
from bot.config import Config, QueueConfig, Secrets, WorkerConfig
from bot.engine import NullEngine
from bot.jobqueue import JobState
from bot.options import parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_worker(url: str, name: str, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "DREAMBOT_BROKER_URL": url}
    command = [
        sys.executable,
        "-m",
        "bot.cli",
        "worker",
        "--name",
        name,
        "--engine",
        "null",
        "--heartbeat-seconds",
        "1",
    ]
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis.from_url(url)
    while client.hget(WORKERS, name) is None:
        if process.poll() is not None:
            raise SystemExit(f"worker {name} did not start")
        time.sleep(0.05)
    return process


async def one_round(config: Config, jobs: int) -> float:
    """Seconds from the start of dreaming until ``jobs`` queued jobs are all done."""
    shutil.rmtree(config.data_dir, ignore_errors=True)
    service = await DreamService.open(config, NullEngine())
    done = asyncio.Event()
    finished = 0

    async def listener(view) -> None:  # type: ignore[no-untyped-def]
        nonlocal finished
        if view.state == JobState.DONE.value:
            finished += 1
            if finished == jobs:
                done.set()

    service.add_listener(listener)
    for n in range(jobs):
        command = parse_command(f"visualize banana seed={n}", has_image=False)
        user = f"p{n % 20}"
        await service.submit(DreamRequest(command, Requester("web", user, user), Destination("web")))
    started = time.perf_counter()
    service.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    seconds = time.perf_counter() - started
    await service.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="dreambot-bench-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    workers: list[subprocess.Popen] = []
    try:
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        queue = QueueConfig(per_user=10_000, cooldown_seconds=0, global_cap=100_000)
        local = Config(data_dir=workdir / "local", queue=queue, worker=WorkerConfig(device="cpu"))
        celery = Config(
            data_dir=workdir / "celery",
            queue=queue,
            worker=WorkerConfig(device="cpu", backend="celery"),
            secrets=Secrets(broker_url=url),
        )
        times: dict[str, list[float]] = {"local": [], "celery, 1 worker": [], "celery, 2 workers": []}
        workers.append(start_worker(url, "bench1", workdir))
        for _ in range(args.rounds):
            times["local"].append(asyncio.run(one_round(local, args.jobs)))
            times["celery, 1 worker"].append(asyncio.run(one_round(celery, args.jobs)))
            workers.append(start_worker(url, "bench2", workdir))
            times["celery, 2 workers"].append(asyncio.run(one_round(celery, args.jobs)))
            last = workers.pop()
            last.terminate()
            last.wait(timeout=30)
            redis.Redis.from_url(url).hdel(WORKERS, "bench2")
        print(f"{args.jobs} null-engine jobs per round, {args.rounds} rounds, medians:")
        rates = {}
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rates[name] = args.jobs / median
            print(f"  {name:<18} {rates[name]:8.1f} jobs/s  ({1000 * median / args.jobs:6.2f} ms per job)")
        overhead = 1000 * (1 / rates["celery, 1 worker"] - 1 / rates["local"])
        print(f"  Celery path overhead over the local worker: {overhead:.2f} ms per job")
        print(f"  two workers against one: {rates['celery, 2 workers'] / rates['celery, 1 worker']:.2f}x")
    finally:
        for worker in workers:
            worker.kill()
        server.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
