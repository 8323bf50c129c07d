"""What every process shares: stop signals, counters, latency figures, atomic JSON writes."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter, deque
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so process loops finish their message and close cleanly."""
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename in the same folder)."""
    write_bytes_atomic(path, json.dumps(data, indent=2, default=_json_default).encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` so a reader never sees half a file (temp file + rename in the same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what msgpack (and so a status reply) can carry
MAX_ERROR_CHARS = 500  # one recent error's text in a status reply


def clamp_int64(value: int) -> int:
    """``value`` within the int64 range, so a counter past it still encodes (saturated, not wrapped)."""
    return min(max(int(value), INT64_MIN), INT64_MAX)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "..." when cut (replies and logs stay bounded)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class LatencyWindow:
    """The most recent ``size`` latencies (ms), summarised as percentiles."""

    def __init__(self, size: int = 1000) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def summary(self) -> dict[str, float | int]:
        if not self.values:
            return {"count": 0}
        arr = np.fromiter(self.values, dtype=np.float64)
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return {"count": int(arr.size), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
                "p99": round(float(p99), 3), "max": round(float(arr.max()), 3)}


class ProcessStats:
    """Counters, levels and latencies of one process, logged every ``interval_s`` and written at exit.

    Every instance alive in a process is listed by ``ProcessStats.live()``, which is what its
    Prometheus exporter (``samsa_stream.metrics``) reads on each scrape."""

    # Upper bounds (ms) of the latency histogram buckets, 1 ms .. 10 s; a last bucket takes the rest.
    LATENCY_BUCKETS_MS: ClassVar[tuple[float, ...]] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                                                       10000)
    _live: ClassVar[weakref.WeakSet[ProcessStats]] = weakref.WeakSet()
    _live_lock: ClassVar[threading.Lock] = threading.Lock()  # a scrape may list while a process creates one

    def __init__(self, process: str, interval_s: float = 10.0) -> None:
        self.process = process
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}
        self.latency: dict[str, LatencyWindow] = {}
        # Per latency name: how many fell in each of LATENCY_BUCKETS_MS (not cumulative), then above them all.
        self.latency_buckets: dict[str, list[int]] = {}
        self.latency_total_ms: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self.errors: deque[str] = deque(maxlen=20)
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._next_log = self.started + interval_s
        with ProcessStats._live_lock:
            ProcessStats._live.add(self)

    @classmethod
    def live(cls) -> list[ProcessStats]:
        """Every ``ProcessStats`` of this process not yet garbage collected."""
        with cls._live_lock:
            return list(cls._live)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def gauge(self, name: str, value: float) -> None:
        """Set a level that goes up and down (streams, objects, clients, queue depth) to ``value``."""
        self.gauges[name] = value

    def error(self, name: str, message: str) -> None:
        """Count a rejected input under ``name`` and log why (the kept text is cut to ``MAX_ERROR_CHARS``)."""
        message = shorten(message, MAX_ERROR_CHARS)
        self.counters[name] += 1
        self.errors.append(message)
        log.warning("%s: %s", name, message)

    def observe(self, name: str, ms: float) -> None:
        self.latency.setdefault(name, LatencyWindow()).add(ms)
        if ms != ms:  # NaN: in the window as given, but no bucket holds it
            return
        buckets = self.latency_buckets.get(name)
        if buckets is None:
            buckets = self.latency_buckets[name] = [0] * (len(self.LATENCY_BUCKETS_MS) + 1)
        buckets[bisect_left(self.LATENCY_BUCKETS_MS, ms)] += 1
        self.latency_total_ms[name] = self.latency_total_ms.get(name, 0.0) + ms

    def snapshot(self) -> dict[str, Any]:
        """Counters (each within int64), gauges, latency summaries, recent errors and ``info``: always encodable."""
        return {"process": self.process, "uptime_s": round(time.monotonic() - self.started, 3),
                "counters": {k: clamp_int64(v) for k, v in self.counters.items()},
                "gauges": dict(self.gauges),
                "latency_ms": {k: v.summary() for k, v in self.latency.items()},
                "recent_errors": list(self.errors), **self.info}

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + self.interval_s
            log.info("stats %s", json.dumps({"counters": dict(self.counters)}))

    def write(self, path: str | Path | None) -> None:
        """Write the snapshot to ``path`` (if given); a file that cannot be written is logged, not raised,
        so a process that served well still exits cleanly."""
        if path is None:
            return
        try:
            write_json_atomic(path, self.snapshot())
        except OSError as exc:
            log.error("cannot write the stats file %s: %s", path, exc)


def setup_logging(level: str, process: str, log_format: str = "text") -> None:
    """Log at ``level`` to stderr, one line per event: readable text, or with ``log_format`` "json" one
    JSON object per line (``supervision.JsonFormatter``: time, level, process, pid, logger, message)."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from .supervision import JsonFormatter  # late: supervision builds on this module

        handler.setFormatter(JsonFormatter(process))
    elif log_format == "text":
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    else:
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
