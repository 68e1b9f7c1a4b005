"""Timing one call the same way in every benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(
    call: Callable[[], object],
    repeats: int,
    digits: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Milliseconds per call: the median of `repeats` timed calls after one warm-up call
    (first-call allocations, ONNX Runtime's lazy initialisation, CUDA's kernel choice).
    `clock=time.process_time` counts this process's CPU time instead of the wall's: with one
    compute thread, what a call costs one core however busy the machine is."""
    call()
    times = []
    for _ in range(max(1, repeats)):
        started = clock()
        call()
        times.append(clock() - started)
    return round(1000 * statistics.median(times), digits)
