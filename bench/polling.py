"""Waiting on a condition the way every bench viewer does: poll it until true or a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float
) -> None:
    """Return once `predicate()` is true; TimeoutError naming `what` after `timeout` s."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
