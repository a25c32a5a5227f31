"""The persistent fair job queue, on real SQLite files."""

import asyncio
import heapq
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import pytest_asyncio

from bot.jobqueue import (
    JobNotCancellable,
    JobNotFound,
    JobNotRunning,
    JobQueue,
    JobState,
    PermissionDenied,
    Priority,
    QueueError,
    QueueLimits,
    QueueRefused,
)

pytestmark = pytest.mark.asyncio

ROOMY = QueueLimits(per_user=100)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest_asyncio.fixture
async def queue(path: Path, clock: Clock) -> AsyncIterator[JobQueue]:
    async with await JobQueue.open(path, ROOMY, clock=clock) as q:
        yield q


async def claim_all(q: JobQueue) -> list[str]:
    """Claim until the queue is empty; the payloads in claim order."""
    order = []
    while (job := await q.claim()) is not None:
        order.append(job.payload)
    return order


async def test_submit_claim_finish_round_trip(queue: JobQueue, clock: Clock) -> None:
    job = await queue.submit('{"image": 1}', user="web:127.0.0.1", fingerprint="fp")
    assert job.state is JobState.QUEUED
    assert (job.user, job.payload, job.fingerprint, job.priority) == ("web:127.0.0.1", '{"image": 1}', "fp", 0)
    assert (job.created_at, job.started_at, job.finished_at, job.attempts) == (1000.0, None, None, 0)
    assert len(job.id) >= 12 and job.id.replace("-", "").replace("_", "").isalnum()

    clock.now = 1005.0
    running = await queue.claim()
    assert running is not None and running.id == job.id
    assert (running.state, running.attempts, running.started_at) == (JobState.RUNNING, 1, 1005.0)
    assert await queue.claim() is None

    assert await queue.set_progress(job.id, 0.5, "octave 2 of 4") is False
    stored = await queue.get(job.id)
    assert (stored.progress, stored.progress_text) == (0.5, "octave 2 of 4")

    clock.now = 1012.0
    done = await queue.finish(job.id, '{"file": "abc.png"}')
    assert (done.state, done.result, done.progress, done.finished_at) == (
        JobState.DONE,
        '{"file": "abc.png"}',
        1,
        1012.0,
    )
    assert await queue.get(job.id) == done
    assert await queue.average_seconds() == 7.0
    with pytest.raises(JobNotRunning):
        await queue.finish(job.id, "{}")


async def test_fail_is_final(queue: JobQueue) -> None:
    job = await queue.submit("{}", user="a")
    await queue.claim()
    failed = await queue.fail(job.id, "That image could not be read; try a PNG or JPEG.")
    assert (failed.state, failed.error) == (JobState.FAILED, "That image could not be read; try a PNG or JPEG.")
    assert failed.finished_at is not None
    assert await queue.claim() is None


async def test_jobs_survive_reopen_and_recover_requeues_running(path: Path, clock: Clock) -> None:
    limits = QueueLimits(per_user=10, max_attempts=2)
    async with await JobQueue.open(path, limits, clock=clock) as q:
        first = await q.submit("first", user="a")
        second = await q.submit("second", user="a")
        stopping = await q.submit("stopping", user="b")
        assert (await q.claim()).id == first.id
        assert (await q.claim()).id == stopping.id
        await q.cancel(stopping.id)  # asked to stop, then the service died before it did

    async with await JobQueue.open(path, limits, clock=clock) as q:
        assert (await q.get(second.id)).state is JobState.QUEUED
        assert (await q.get(first.id)).state is JobState.RUNNING
        touched = await q.recover()
        assert {job.id: job.state for job in touched} == {first.id: JobState.QUEUED, stopping.id: JobState.CANCELLED}
        requeued = await q.get(first.id)
        assert (requeued.attempts, requeued.started_at) == (1, None)
        assert await q.recover() == []
        # The requeued job keeps its place at the front of its owner's line.
        again = await q.claim()
        assert (again.id, again.attempts) == (first.id, 2)

    async with await JobQueue.open(path, limits, clock=clock) as q:
        [dropped] = await q.recover()
        assert (dropped.id, dropped.state) == (first.id, JobState.FAILED)
        assert dropped.error == "This request stopped the dreaming worker 2 times and has been dropped."
        assert (await q.claim()).id == second.id


async def test_retry_requeues_then_fails_at_max_attempts(path: Path) -> None:
    async with await JobQueue.open(path, QueueLimits(max_attempts=2)) as q:
        job = await q.submit("{}", user="a")
        await q.claim()
        await q.set_progress(job.id, 0.7, "almost")
        retried = await q.retry(job.id, "out of memory")
        assert (retried.state, retried.attempts, retried.progress) == (JobState.QUEUED, 1, 0)
        assert (await q.claim()).attempts == 2
        dropped = await q.retry(job.id, "out of memory")
        assert dropped.state is JobState.FAILED
        assert dropped.error == (
            "This request failed 2 times (out of memory); it has been dropped. Try another image or settings."
        )
        assert await q.claim() is None


async def test_round_robin_between_users(queue: JobQueue) -> None:
    for i in range(1, 6):
        await queue.submit(f"A{i}", user="a")
    await queue.submit("B1", user="b")
    for i in range(1, 3):
        await queue.submit(f"C{i}", user="c")
    assert await claim_all(queue) == ["A1", "B1", "C1", "A2", "C2", "A3", "A4", "A5"]


async def test_newcomer_is_served_before_a_user_just_served(queue: JobQueue) -> None:
    for i in range(1, 4):
        await queue.submit(f"A{i}", user="a")
    assert (await queue.claim()).payload == "A1"
    await queue.submit("B1", user="b")
    assert await claim_all(queue) == ["B1", "A2", "A3"]


async def test_priority_classes_are_served_in_order(queue: JobQueue) -> None:
    await queue.submit("bulk", user="a", priority=Priority.BULK)
    await queue.submit("scheduled", user="b", priority=Priority.SCHEDULED)
    await queue.submit("chat1", user="c")
    await queue.submit("chat2", user="a")
    assert await claim_all(queue) == ["chat1", "chat2", "scheduled", "bulk"]


async def test_fairness_survives_reopen(path: Path) -> None:
    async with await JobQueue.open(path, ROOMY) as q:
        for name in ("A1", "A2", "B1", "B2"):
            await q.submit(name, user=name[0])
        assert (await q.claim()).payload == "A1"
    async with await JobQueue.open(path, ROOMY) as q:
        # Without the stored turn, A2 (older than B1) would come next.
        assert await claim_all(q) == ["B1", "A2", "B2"]


async def test_twenty_users_each_get_one_of_the_first_twenty_turns(path: Path) -> None:
    users = [f"discord:{n}" for n in range(20)]
    submissions = [user for user in users for _ in range(10)]
    random.Random(7).shuffle(submissions)
    async with await JobQueue.open(path, QueueLimits(per_user=10)) as q:
        for user in submissions:
            await q.submit("{}", user=user)
        first = [(await q.claim()).user for _ in range(20)]
        second = [(await q.claim()).user for _ in range(20)]
    assert sorted(first) == sorted(users)
    assert sorted(second) == sorted(users)


async def test_positions_agree_with_claim_order(queue: JobQueue, clock: Clock) -> None:
    rng = random.Random(3)
    # Some history first, so stored turns matter, and two finished jobs (10 s and 20 s) for the estimate.
    for duration in (10, 20):
        await queue.submit("warm-up", user=f"u{duration % 3}")
        job = await queue.claim()
        clock.now += duration
        await queue.finish(job.id, "{}")
    for i in range(60):
        await queue.submit(f"job{i}", user=f"u{rng.randrange(6)}", priority=Priority(rng.choice([0, 0, 1, 2])))
        clock.now += 0.5
    queued = await queue.all_jobs([JobState.QUEUED])
    positions = {job.id: await queue.position(job.id) for job in queued}
    assert sorted(positions.values()) == list(range(len(queued)))
    for job in queued[:10]:
        assert await queue.estimate(job.id) == positions[job.id] * 15.0

    claimed = []
    while (job := await queue.claim()) is not None:
        claimed.append(job.id)
        assert await queue.position(job.id) is None and await queue.estimate(job.id) is None
    assert claimed == sorted(positions, key=positions.__getitem__)


async def test_per_user_limit(path: Path) -> None:
    async with await JobQueue.open(path, QueueLimits(per_user=2)) as q:
        first = await q.submit("{}", user="a")
        await q.submit("{}", user="a")
        with pytest.raises(QueueRefused) as refused:
            await q.submit("{}", user="a")
        assert refused.value.reason == "user_limit"
        assert str(refused.value) == refused.value.message
        assert refused.value.message == "You already have 2 dreams waiting; wait for one to finish or cancel one."
        assert refused.value.retry_after > 0
        assert isinstance(refused.value, QueueError)
        await q.submit("{}", user="b")  # others are not affected
        await q.cancel(first.id, by_user="a")
        await q.submit("{}", user="a")


async def test_cooldown_with_a_fake_clock(path: Path, clock: Clock) -> None:
    async with await JobQueue.open(path, QueueLimits(cooldown_seconds=30), clock=clock) as q:
        await q.submit("{}", user="a")
        clock.now += 18
        with pytest.raises(QueueRefused) as refused:
            await q.submit("{}", user="a")
        assert refused.value.reason == "cooldown"
        assert refused.value.retry_after == pytest.approx(12)
        assert refused.value.message == "Slow down a little: you can ask again in 12 seconds."
        await q.submit("{}", user="b")
        clock.now += 12
        await q.submit("{}", user="a")


async def test_global_cap(path: Path) -> None:
    async with await JobQueue.open(path, QueueLimits(global_cap=3)) as q:
        for n in range(3):
            await q.submit("{}", user=f"u{n}")
        for exempt in (False, True):
            with pytest.raises(QueueRefused) as refused:
                await q.submit("{}", user="late", exempt=exempt)
            assert refused.value.reason == "queue_full"
            assert refused.value.retry_after > 0
            assert refused.value.message.startswith("The queue is full right now; please try again in about ")
        scheduled = await q.submit("{}", user="scheduler", priority=Priority.SCHEDULED)
        assert scheduled.state is JobState.QUEUED
        await q.claim()  # one slot frees up... but the scheduled job took it: still full
        with pytest.raises(QueueRefused):
            await q.submit("{}", user="late")
        await q.claim()
        await q.submit("{}", user="late")


async def test_exempt_skips_per_user_limit_and_cooldown(path: Path, clock: Clock) -> None:
    async with await JobQueue.open(path, QueueLimits(per_user=1, cooldown_seconds=60), clock=clock) as q:
        for _ in range(3):
            await q.submit("{}", user="discord:admin", exempt=True)
        assert len(await q.jobs_of("discord:admin")) == 3
        # Exempt submissions start no cooldown, but the per-user limit still counts their jobs.
        with pytest.raises(QueueRefused) as refused:
            await q.submit("{}", user="discord:admin")
        assert refused.value.reason == "user_limit"
        assert refused.value.message == "You already have 3 dreams waiting; wait for one to finish or cancel one."


async def test_identical_request_is_answered_from_the_earlier_result(path: Path, clock: Clock) -> None:
    async with await JobQueue.open(path, QueueLimits(per_user=1, cooldown_seconds=10), clock=clock) as q:
        original = await q.submit('{"a": 1}', user="a", fingerprint="same")
        await q.claim()
        clock.now += 30
        await q.finish(original.id, '{"file": "x.png"}')
        await q.submit("{}", user="b")  # b now has as many dreams waiting as allowed, and a cooldown...
        clock.now += 1
        cached = await q.submit('{"a": 1}', user="b", fingerprint="same")  # ...but no limit applies to a cached answer
        assert cached.id != original.id
        assert (cached.state, cached.cached, cached.result) == (JobState.DONE, True, '{"file": "x.png"}')
        assert (cached.user, cached.finished_at, cached.progress) == ("b", clock.now, 1)
        assert (await q.get(original.id)).cached is False
        assert await q.average_seconds() == 30  # the instant answer does not drag the estimate down
        assert [job.id for job in await q.recent()] == [original.id]
        assert {job.id for job in await q.recent(include_cached=True)} == {original.id, cached.id}


async def test_cached_answer_starts_the_cooldown(path: Path, clock: Clock) -> None:
    async with await JobQueue.open(path, QueueLimits(cooldown_seconds=10), clock=clock) as q:
        original = await q.submit("{}", user="a", fingerprint="same")
        await q.claim()
        await q.finish(original.id, "{}")
        clock.now += 20
        await q.submit("{}", user="b", fingerprint="same")
        clock.now += 4
        with pytest.raises(QueueRefused) as refused:
            await q.submit("{}", user="b")
        assert refused.value.reason == "cooldown"
        assert refused.value.retry_after == pytest.approx(6)


async def test_no_cached_answer_from_a_failed_job(queue: JobQueue) -> None:
    failed = await queue.submit("{}", user="a", fingerprint="same")
    await queue.claim()
    await queue.fail(failed.id, "It broke.")
    again = await queue.submit("{}", user="a", fingerprint="same")
    assert (again.state, again.cached) == (JobState.QUEUED, False)
    assert (await queue.claim()).id == again.id


async def test_cancel_queued_and_running_jobs(queue: JobQueue) -> None:
    waiting = await queue.submit("waiting", user="a")
    running = await queue.submit("running", user="a")
    await queue.submit("later", user="b")
    # b's job is not touched; a's queued job goes at once.
    cancelled = await queue.cancel(waiting.id, by_user="a")
    assert (cancelled.state, cancelled.error) == (JobState.CANCELLED, "Cancelled.")
    assert cancelled.finished_at is not None
    assert (await queue.claim()).id == running.id

    asked = await queue.cancel(running.id, by_user="a")
    assert (asked.state, asked.cancel_requested) == (JobState.RUNNING, True)
    assert await queue.set_progress(running.id, 0.3) is True
    stopped = await queue.mark_cancelled(running.id)
    assert (stopped.state, stopped.error) == (JobState.CANCELLED, "Cancelled.")
    assert [job.payload for job in await queue.all_jobs([JobState.QUEUED])] == ["later"]
    assert (await queue.claim()).payload == "later"


async def test_who_may_cancel(queue: JobQueue) -> None:
    job = await queue.submit("{}", user="discord:1")
    with pytest.raises(PermissionDenied) as denied:
        await queue.cancel(job.id, by_user="discord:2")
    assert str(denied.value) == "Only the person who asked (or an admin) can cancel that dream."
    assert (await queue.get(job.id)).state is JobState.QUEUED
    assert (await queue.cancel(job.id, by_user="discord:2", admin=True)).state is JobState.CANCELLED
    with pytest.raises(JobNotCancellable) as finished:
        await queue.cancel(job.id)
    assert str(finished.value) == "That dream has already finished."
    other = await queue.submit("{}", user="discord:1")
    assert (await queue.cancel(other.id)).state is JobState.CANCELLED  # the operator's command line
    with pytest.raises(JobNotFound) as missing:
        await queue.cancel("no-such-job")
    assert isinstance(missing.value, LookupError)
    with pytest.raises(LookupError):
        await queue.get("no-such-job")


async def test_a_second_process_cancels_and_the_worker_notices(path: Path) -> None:
    async with await JobQueue.open(path) as service:
        job = await service.submit("{}", user="web:127.0.0.1")
        await service.claim()
        async with await JobQueue.open(path) as cli:
            assert [j.id for j in await cli.all_jobs()] == [job.id]
            await cli.cancel(job.id)
        assert await service.set_progress(job.id, 0.5) is True
        assert (await service.mark_cancelled(job.id)).state is JobState.CANCELLED


async def test_concurrent_claims_never_share_a_job(path: Path) -> None:
    async with await JobQueue.open(path, ROOMY) as q:
        for n in range(5):
            await q.submit(f"{n}", user=f"u{n % 2}")
        claimed = await asyncio.gather(*(q.claim() for _ in range(10)))
        ids = [job.id for job in claimed if job is not None]
        assert len(ids) == len(set(ids)) == 5

        # Two connections, as two processes would have: SQLite's own locking must keep them apart.
        for n in range(20):
            await q.submit(f"{n}", user=f"u{n % 3}")
        async with await JobQueue.open(path, ROOMY) as other:
            claimed = await asyncio.gather(*((q if n % 2 else other).claim() for n in range(24)))
        ids = [job.id for job in claimed if job is not None]
        assert len(ids) == len(set(ids)) == 20


async def test_delete_finished_before(queue: JobQueue, clock: Clock) -> None:
    async def finished(state: JobState, at: float, fingerprint: str | None = None) -> str:
        job = await queue.submit("{}", user="a", fingerprint=fingerprint)
        await queue.claim()
        clock.now = at
        if state is JobState.DONE:
            await queue.finish(job.id, f'{{"file": "{job.id}"}}')
        elif state is JobState.FAILED:
            await queue.fail(job.id, "no")
        else:
            await queue.cancel(job.id)
            await queue.mark_cancelled(job.id)
        return job.id

    old = {await finished(state, 100) for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)}
    new = await finished(JobState.DONE, 200)
    original = await finished(JobState.DONE, 100, fingerprint="shared")
    clock.now = 300
    copy = (await queue.submit("{}", user="b", fingerprint="shared")).id
    running = await queue.submit("{}", user="a")
    await queue.claim()
    clock.now = 10  # a job queued long ago is never expired
    waiting = await queue.submit("{}", user="a")

    removed = await queue.delete_finished_before(150)
    # The original stays while a newer cached answer still points at its files.
    assert {job.id for job in removed} == old
    assert {job.id for job in await queue.all_jobs()} == {new, original, copy, running.id, waiting.id}

    removed = await queue.delete_finished_before(400)
    assert {(job.id, job.cached) for job in removed} == {(new, False), (original, False), (copy, True)}
    assert {job.id for job in await queue.all_jobs()} == {running.id, waiting.id}


async def test_counts_include_zeros(queue: JobQueue) -> None:
    assert await queue.counts() == dict.fromkeys(JobState, 0)
    await queue.submit("{}", user="a")
    await queue.submit("{}", user="a")
    await queue.claim()
    assert await queue.counts() == {
        JobState.QUEUED: 1,
        JobState.RUNNING: 1,
        JobState.DONE: 0,
        JobState.FAILED: 0,
        JobState.CANCELLED: 0,
    }


async def test_listings_are_newest_first(queue: JobQueue, clock: Clock) -> None:
    ids = []
    for n in range(4):
        clock.now += 1
        ids.append((await queue.submit(f"{n}", user="a" if n % 2 else "b")).id)
    assert [job.id for job in await queue.jobs_of("a")] == [ids[3], ids[1]]
    assert [job.id for job in await queue.jobs_of("a", limit=1)] == [ids[3]]
    assert await queue.jobs_of("a", [JobState.DONE]) == []
    assert [job.id for job in await queue.all_jobs()] == ids[::-1]
    assert await queue.all_jobs([]) == []
    for _ in range(4):
        job = await queue.claim()
        clock.now += 1
        await queue.finish(job.id, "{}")
    done = await queue.recent(limit=3)
    assert len(done) == 3
    assert [job.finished_at for job in done] == sorted((job.finished_at for job in done), reverse=True)


# ---------------------------------------------------------------------------------------------------------------------
# Positions in closed form, checked against a step-by-step simulation of claim() (the oracle below).


def _fair_order(rows: Iterable[tuple[str, str, int]], turns: dict[str, int]) -> list[str]:
    """Job ids of one priority class in the order claim() hands them out if nothing new arrives, by simulating it.

    ``rows`` are (job id, user, seq) of the queued jobs, ``turns`` maps user -> served_order for this class. The next
    job goes to the user served least recently (never served first, then by oldest waiting job); that user is then
    the most recently served.
    """
    per_user: dict[str, list[tuple[int, str]]] = {}
    for job_id, user, seq in rows:
        per_user.setdefault(user, []).append((seq, job_id))
    heap: list[tuple[tuple[int, int], str]] = []
    for user, jobs in per_user.items():
        jobs.sort(reverse=True)  # pop() from the end gives the oldest
        heap.append(((turns.get(user) or 0, jobs[-1][0]), user))
    heapq.heapify(heap)
    next_order = max(turns.values(), default=0) + 1
    order: list[str] = []
    while heap:
        _, user = heapq.heappop(heap)
        jobs = per_user[user]
        order.append(jobs.pop()[1])
        if jobs:
            heapq.heappush(heap, ((next_order, jobs[-1][0]), user))
            next_order += 1
    return order


def simulated_order(path: Path) -> list[str]:
    """Every queued job id, in the order claim() will serve them, simulated from the file's rows."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, user, seq, priority FROM jobs WHERE state = 'queued'").fetchall()
        turns = db.execute("SELECT user, priority, served_order FROM turns").fetchall()
    order = []
    for priority in sorted({row[3] for row in rows}):
        in_class = [(job_id, user, seq) for job_id, user, seq, p in rows if p == priority]
        order += _fair_order(in_class, {user: served for user, p, served in turns if p == priority})
    return order


def assert_waiting_summary_is_exact(path: Path) -> None:
    """The per-(class, user) summary the triggers keep equals a count made from scratch."""
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT priority, user, queued, first_seq FROM waiting ORDER BY 1, 2").fetchall()
        counted = db.execute(
            "SELECT priority, user, COUNT(*), MIN(seq) FROM jobs WHERE state = 'queued' GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert kept == counted


async def random_history(q: JobQueue, rng: random.Random, clock: Clock, steps: int) -> None:
    """Submissions, claims, and every way a job leaves or re-enters the queue, in random order."""
    users = [f"u{n}" for n in range(rng.randint(1, 7))]
    running = []
    for _ in range(steps):
        clock.now += rng.random()
        roll = rng.random()
        if roll < 0.5:
            await q.submit("{}", user=rng.choice(users), priority=Priority(rng.choice([0, 0, 0, 1, 2])))
        elif roll < 0.7:
            if (job := await q.claim()) is not None:
                running.append(job)
        elif roll < 0.9 and running:
            job = running.pop(rng.randrange(len(running)))
            outcome = rng.choice(["finish", "fail", "retry", "release", "cancel"])
            if outcome == "finish":
                await q.finish(job.id, "{}")
            elif outcome == "fail":
                await q.fail(job.id, "no")
            elif outcome == "retry":
                await q.retry(job.id, "crash")
            elif outcome == "release":
                await q.release(job.id)
            else:
                await q.cancel(job.id)
                await q.mark_cancelled(job.id)
        else:
            waiting = await q.all_jobs([JobState.QUEUED])
            if waiting:
                await q.cancel(rng.choice(waiting).id)


@pytest.mark.parametrize("seed", range(30))
async def test_closed_form_positions_match_the_simulated_order_on_random_queues(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    async with await JobQueue.open(path, QueueLimits(per_user=1000, max_attempts=3), clock=clock) as q:
        for _ in range(4):
            await random_history(q, rng, clock, steps=rng.randint(5, 60))
            assert_waiting_summary_is_exact(path)
            expected = simulated_order(path)
            positions = {job_id: await q.position(job_id) for job_id in expected}
            assert positions == {job_id: n for n, job_id in enumerate(expected)}
        assert await claim_ids(q) == expected
        assert_waiting_summary_is_exact(path)


async def claim_ids(q: JobQueue) -> list[str]:
    order = []
    while (job := await q.claim()) is not None:
        order.append(job.id)
    return order


async def test_place_gives_position_and_estimate_in_one_call(queue: JobQueue, clock: Clock) -> None:
    warm_up = await queue.submit("{}", user="w")
    await queue.claim()
    clock.now += 12
    await queue.finish(warm_up.id, "{}")  # the average is now 12 s
    first = await queue.submit("{}", user="a")
    second = await queue.submit("{}", user="a")
    other = await queue.submit("{}", user="b")
    assert await queue.place(first.id) == (0, 0.0)
    assert await queue.place(other.id) == (1, 12.0)  # b takes a turn before a's second job
    assert await queue.place(second.id) == (2, 24.0)
    for job in (first, second, other):
        position, estimate = await queue.place(job.id)
        assert (position, estimate) == (await queue.position(job.id), await queue.estimate(job.id))
    await queue.claim()
    assert await queue.place(first.id) == (None, None)  # running
    assert await queue.place(warm_up.id) == (None, None)  # finished
    with pytest.raises(JobNotFound):
        await queue.place("no-such-job")


async def test_positions_count_the_classes_above(queue: JobQueue) -> None:
    bulk = await queue.submit("{}", user="a", priority=Priority.BULK)
    scheduled = [await queue.submit("{}", user=f"s{n}", priority=Priority.SCHEDULED) for n in range(3)]
    chats = [await queue.submit("{}", user="c") for _ in range(2)]
    assert [await queue.position(job.id) for job in chats] == [0, 1]
    assert [await queue.position(job.id) for job in scheduled] == [2, 3, 4]
    assert await queue.position(bulk.id) == 5


async def test_release_puts_a_running_job_back_without_counting_the_attempt(queue: JobQueue) -> None:
    first = await queue.submit("first", user="a")
    await queue.submit("second", user="a")
    await queue.submit("other", user="b")
    assert (await queue.claim()).id == first.id
    released = await queue.release(first.id)
    assert (released.state, released.attempts, released.started_at, released.progress) == (JobState.QUEUED, 0, None, 0)
    assert await queue.position(first.id) == 1  # a was just served, so b goes first; then a's oldest job again
    assert await claim_all(queue) == ["other", "first", "second"]

    stopping = await queue.submit("stopping", user="c")
    await queue.claim()
    await queue.cancel(stopping.id)  # asked to stop, then the service shut down
    assert (await queue.release(stopping.id)).state is JobState.CANCELLED
    assert (await queue.release(stopping.id)).state is JobState.CANCELLED  # not running: returned as it is


async def test_a_file_without_the_waiting_summary_gets_one_at_open(path: Path) -> None:
    async with await JobQueue.open(path, ROOMY) as q:
        for name in ("A1", "A2", "B1", "C1", "C2"):
            await q.submit(name, user=name[0])
        assert (await q.claim()).payload == "A1"
    with sqlite3.connect(path) as db:  # what a file written before the summary existed looks like
        for trigger in ("waiting_on_insert", "waiting_on_enter", "waiting_on_leave", "waiting_on_delete"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE waiting")
        db.execute("PRAGMA user_version = 1")
    async with await JobQueue.open(path, ROOMY) as q:
        assert_waiting_summary_is_exact(path)
        assert await claim_all(q) == ["B1", "C1", "A2", "C2"]


async def test_operations_called_together_keep_their_order_and_their_own_outcomes(path: Path) -> None:
    async with await JobQueue.open(path, QueueLimits(per_user=3)) as q:
        outcomes = await asyncio.gather(
            *(q.submit(f"{n}", user="a") for n in range(8)),
            q.submit("b", user="b"),
            q.get("no-such-job"),
            return_exceptions=True,
        )
        assert [o.payload for o in outcomes[:3]] == ["0", "1", "2"]
        assert all(isinstance(o, QueueRefused) and o.reason == "user_limit" for o in outcomes[3:8])
        assert outcomes[8].payload == "b"
        assert isinstance(outcomes[9], JobNotFound)
        # A refused submission undid only itself.
        assert sorted(job.payload for job in await q.all_jobs()) == ["0", "1", "2", "b"]
        assert_waiting_summary_is_exact(path)


async def test_a_claim_whose_caller_gave_up_leaves_the_job_queued(queue: JobQueue) -> None:
    job = await queue.submit("{}", user="a")
    # Hold the queue's thread so the claim waits for it; then give up on the claim.
    gate = threading.Event()
    queue._executor.submit(gate.wait)
    claim = asyncio.create_task(queue.claim())
    async with asyncio.timeout(10):  # the claim waits in line for the queue's thread (not a guessed pause)
        while queue._executor._work_queue.qsize() == 0:
            await asyncio.sleep(0.001)
    claim.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await claim
    assert (await queue.get(job.id)).state is JobState.QUEUED

    # Given up while the claim runs: it is rolled back rather than committed with nobody to run the job.
    started, proceed = threading.Event(), threading.Event()

    def slow_claim(db: sqlite3.Connection, now: float) -> object:
        claimed = queue._claim(db, now)
        started.set()
        proceed.wait(10)
        return claimed

    claim = asyncio.create_task(queue._write(slow_claim, 1000.0))
    assert await asyncio.to_thread(started.wait, 10)
    claim.cancel()
    await asyncio.sleep(0)
    proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await claim
    assert (await queue.get(job.id)).state is JobState.QUEUED
    assert (await queue.claim()).id == job.id


async def test_close_ends_the_queues_thread(path: Path) -> None:
    before = set(threading.enumerate())
    q = await JobQueue.open(path)
    [thread] = set(threading.enumerate()) - before
    await q.submit("{}", user="a")
    await q.close()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    await q.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await q.get("anything")


async def test_a_queue_left_open_does_not_keep_the_process_alive(path: Path) -> None:
    script = (
        "import asyncio\n"
        "from bot.jobqueue import JobQueue\n"
        "async def main():\n"
        f"    q = await JobQueue.open({str(path)!r})\n"
        "    await q.submit('{}', user='a')\n"
        "    print('submitted')\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "submitted"), done.stderr
