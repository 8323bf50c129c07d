"""What every process shares: stop signals, counters, latency figures, atomic JSON writes."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

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
    """Counters and latencies of one process, logged every ``interval_s`` and written at exit."""

    def __init__(self, process: str, interval_s: float = 10.0) -> None:
        self.process = process
        self.counters: Counter[str] = Counter()
        self.latency: dict[str, LatencyWindow] = {}
        self.info: dict[str, Any] = {}
        self.errors: deque[str] = deque(maxlen=20)
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._next_log = self.started + interval_s

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, name: str, message: str) -> None:
        """Count a rejected input under ``name`` and log why (the kept text is cut to ``MAX_ERROR_CHARS``)."""
        message = shorten(message, MAX_ERROR_CHARS)
        self.counters[name] += 1
        self.errors.append(message)
        log.warning("%s: %s", name, message)

    def observe(self, name: str, ms: float) -> None:
        self.latency.setdefault(name, LatencyWindow()).add(ms)

    def snapshot(self) -> dict[str, Any]:
        """Counters (each within int64), latency summaries, recent errors and ``info``: always encodable."""
        return {"process": self.process, "uptime_s": round(time.monotonic() - self.started, 3),
                "counters": {k: clamp_int64(v) for k, v in self.counters.items()},
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


def setup_logging(level: str, process: str) -> None:
    logging.basicConfig(level=getattr(logging, level),
                        format=f"%(asctime)s {process}[%(process)d] %(levelname)s %(name)s: %(message)s")
