"""The service's own cost per job: submit -> queue -> dispatch -> store the result -> notify, with an engine that
answers at once (NullEngine), on a real SQLite file.

    python benchmarks/queue_throughput.py                  # 2000 jobs from 20 users, the three workloads
    python benchmarks/queue_throughput.py --jobs 500 --profile

Three workloads: every request different (each one is dreamed); every request the same as one dreamed just before
(each is answered from the cache); and the worker alone, on a queue filled beforehand (claim -> engine -> store ->
finish -> notify). Prints jobs/s next to the target (the submit phase on its own: submitting returns once the job is
queued, while the worker is already busy); ``--profile`` adds cProfile's top functions for the distinct workload.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import tempfile
import time
from pathlib import Path

from bot.config import Config, QueueConfig
from bot.engine import NullEngine
from bot.options import build_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView

TARGET = 500.0  # jobs per second on 2 cores


async def run(jobs: int, users: int, *, workload: str, data_dir: Path) -> dict[str, float]:
    config = Config(data_dir=data_dir, queue=QueueConfig(per_user=10**6, cooldown_seconds=0, global_cap=10**6))
    service = await DreamService.open(config, NullEngine(steps=0))
    finished = asyncio.Event()
    done = 0
    cached = 0

    async def count(view: JobView) -> None:
        nonlocal done, cached
        if view.state == "done":
            done += 1
            cached += view.cached
            if done == jobs:
                finished.set()

    service.add_listener(count)

    def request(n: int) -> DreamRequest:
        user = f"user{n % users}"
        options = {} if workload == "repeated" else {"seed": n}  # the fingerprint differs only if the options do
        return DreamRequest(build_command("visualize", "banana", options), Requester("web", user), Destination("web"))

    requests = [request(n) for n in range(jobs)]
    if workload == "drain":  # fill the queue first (not timed; straight into the queue), then time the worker alone
        for r in requests:
            await service.queue.submit(r.to_json(), user=r.requester.key, fingerprint=r.fingerprint())
        requests = []
    service.start()
    await asyncio.sleep(0.2)  # the worker is up and waiting
    if workload == "repeated":  # dream it once, so the rest can be answered from the cache
        first = await service.submit(requests.pop())
        async for _ in service.subscribe(first.id):
            pass
        jobs -= 1
        done = cached = 0
    started = time.perf_counter()
    await asyncio.gather(*(service.submit(r) for r in requests))
    submitted = time.perf_counter()
    await asyncio.wait_for(finished.wait(), timeout=600)
    ended = time.perf_counter()
    await service.close()
    return {
        "seconds": ended - started,
        "submit_seconds": submitted - started,
        "jobs_per_second": jobs / (ended - started),
        "dreamed": jobs - cached,
        "cached": cached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each workload; the median is printed")
    parser.add_argument("--profile", action="store_true", help="cProfile one distinct run and print the top")
    args = parser.parse_args()

    print(f"{args.jobs} jobs from {args.users} users, NullEngine(steps=0), {os.cpu_count()} cores; target {TARGET:g}/s")
    labels = {"distinct": "distinct", "repeated": "repeated (cache)", "drain": "worker alone"}
    for workload, label in labels.items():
        results = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as folder:
                results.append(asyncio.run(run(args.jobs, args.users, workload=workload, data_dir=Path(folder))))
        rates = [r["jobs_per_second"] for r in results]
        middle = sorted(results, key=lambda r: r["jobs_per_second"])[len(results) // 2]
        runs = f"  [runs: {', '.join(f'{rate:.0f}' for rate in rates)}]" if args.rounds > 1 else ""
        submitting = (
            f"submit phase {middle['submit_seconds']:.2f} s = {args.jobs / middle['submit_seconds']:.0f}/s; "
            if workload != "drain"
            else "queue filled beforehand; "
        )
        print(
            f"  {label:<17} {middle['jobs_per_second']:7.0f} jobs/s end to end ({middle['seconds']:.2f} s; "
            f"{submitting}dreamed {middle['dreamed']:.0f}, from the cache {middle['cached']:.0f}){runs}"
        )
        verdict = "meets" if middle["jobs_per_second"] >= TARGET else "BELOW"
        print(f"  {'':<17} {verdict} the target of {TARGET:g}/s")

    if args.profile:
        profiler = cProfile.Profile()
        with tempfile.TemporaryDirectory() as folder:
            profiler.enable()
            asyncio.run(run(args.jobs, args.users, workload="distinct", data_dir=Path(folder)))
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(30)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())


if __name__ == "__main__":
    main()
