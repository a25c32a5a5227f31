"""The service's numbers in the Prometheus text exposition format (version 0.0.4), for ``GET /metrics``.

Rendering is plain string work on values read from the service; nothing here keeps state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.jobqueue import JobState

if TYPE_CHECKING:
    from bot.service import DreamService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Metric:
    """One metric family: its HELP and TYPE lines and its samples (name suffix, labels, value)."""

    name: str
    kind: str  # gauge, counter, summary
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> Metric:
        self.samples.append((suffix, labels, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            lines.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines)


def render(metrics: Iterable[Metric]) -> str:
    return "\n".join(metric.render() for metric in metrics) + "\n"


async def render_service(service: DreamService) -> str:
    """The whole ``/metrics`` page of one service."""
    return render(await service_metrics(service))


async def service_metrics(service: DreamService) -> list[Metric]:
    """The metric families of one DreamService."""
    counts = await service.queue.counts()
    dreams = list(service.worker.dream_seconds)
    lags = list(service.loop_lag.samples)
    lag_p50, lag_p99 = service.loop_lag.percentile(50), service.loop_lag.percentile(99)
    jobs = Metric("dreambot_jobs", "gauge", "Jobs kept in the queue's database, by state.")
    for state in JobState:
        jobs.add(counts.get(state, 0), state=state.value)
    spend = Metric("dreambot_platform_spend_dollars", "gauge", "Money spent on a platform's paid API, by period.")
    remaining = Metric(
        "dreambot_platform_budget_remaining_dollars", "gauge", "Money left in a platform's budget, by period."
    )
    exhausted = Metric(
        "dreambot_platform_budget_exhausted", "gauge", "1 while a platform's budget is spent (it waits)."
    )
    for platform, report in service.platform_status.items():
        numbers = report()
        spend.add(numbers["spent_today"], platform=platform, period="day")
        spend.add(numbers["spent_this_month"], platform=platform, period="month")
        remaining.add(numbers["remaining_today"], platform=platform, period="day")
        remaining.add(numbers["remaining_this_month"], platform=platform, period="month")
        exhausted.add(int(bool(numbers["exhausted"])), platform=platform)
    return [
        *_backend_metrics(service, counts.get(JobState.QUEUED, 0)),
        *([spend, remaining, exhausted] if spend.samples else []),
        Metric("dreambot_queue_depth", "gauge", "Dreams waiting to start.").add(counts.get(JobState.QUEUED, 0)),
        jobs,
        Metric("dreambot_dream_seconds", "summary", "Seconds the worker spent on each finished dream.")
        .add(math.fsum(dreams), "_sum")
        .add(len(dreams), "_count"),
        Metric(
            "dreambot_event_loop_lag_seconds",
            "summary",
            "How late the event loop wakes from a short sleep, over its recent samples.",
        )
        .add(lag_p50, quantile="0.5")
        .add(lag_p99, quantile="0.99")
        .add(math.fsum(lags), "_sum")
        .add(len(lags), "_count"),
    ]


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _backend_metrics(service: DreamService, queued: int) -> list[Metric]:
    """Workers by state and the queue per backend: the numbers to watch when dreams run on many machines."""
    backend = service.config.worker.backend
    states: dict[str, int] = {}
    busy = 0
    for worker in service.worker.describe():
        states[worker["state"]] = states.get(worker["state"], 0) + 1
        busy += bool(worker["current_job"])
    workers = Metric("dreambot_workers", "gauge", "Dreaming workers heard from, by state (ready, broken, lost).")
    for state, count in sorted(states.items()):
        workers.add(count, backend=backend, state=state)
    dispatched = len(getattr(service.worker, "dispatches", {})) if backend == "celery" else busy
    return [
        workers,
        Metric("dreambot_workers_busy", "gauge", "Workers dreaming now.").add(busy, backend=backend),
        Metric("dreambot_backend_queue_depth", "gauge", "Dreams waiting for a free worker, per backend.").add(
            queued, backend=backend
        ),
        Metric("dreambot_dispatched", "gauge", "Dreams handed to a worker and not yet finished, per backend.").add(
            dispatched, backend=backend
        ),
    ]
