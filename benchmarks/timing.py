"""Timing helpers the benchmarks share."""

from __future__ import annotations

import time


def best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` calls of `fn`, in seconds (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
