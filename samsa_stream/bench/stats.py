"""Timing a call repeatedly and summarising the times; peak memory of this process."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence

import numpy as np

from .report import Timing


def summarize(ms: Sequence[float]) -> Timing:
    """Percentiles of times in milliseconds (``ValueError`` for none)."""
    if len(ms) == 0:
        raise ValueError("no times to summarise")
    arr = np.asarray(ms, dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(arr, q)) for q in (50, 95, 99))
    return Timing(p50_ms=round(p50, 3), p95_ms=round(p95, 3), p99_ms=round(p99, 3), max_ms=round(float(arr.max()), 3),
                  mean_ms=round(float(arr.mean()), 3), n=int(arr.size))


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Times of several cases measured in rotating order, so drift on a busy machine falls on all alike."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(warmup + repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            cases[name]()
            sync()
            if repeat >= warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator rounded, or None where either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def process_peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of another running process, None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
