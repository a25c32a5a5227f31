"""Waiting after transient failures, for anything that retries: adapters, the scheduler, start-up."""

from __future__ import annotations

import random


class Backoff:
    """Waits after transient failures (5xx, network): doubling, capped, with full jitter; reset on success."""

    def __init__(self, first: float = 5.0, cap: float = 900.0, rng: random.Random | None = None) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next_wait(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.first * 2 ** (self.failures - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
