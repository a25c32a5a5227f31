"""Waiting in tests for the event itself rather than for a fixed time (importable from every test)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true (checked every loop turn), failing after ``timeout`` seconds.

    ``condition`` may be a plain function or a coroutine function: what it returns is awaited when it can be.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)
