"""Telling systemd how a process is doing (the sd_notify protocol of ``Type=notify`` units).

``ready`` once the process serves (READY=1), ``watchdog`` from its main loop (WATCHDOG=1, sent at most
every half of the unit's WatchdogSec, so a wedged loop stops the pings and systemd restarts it),
``status`` with its key counters (STATUS=, shown by ``systemctl status``) and ``stopping`` when it
shuts down (STOPPING=1). Outside systemd (no NOTIFY_SOCKET) every call does nothing at all.

Each process has one notifier (``current()``), installed by ``commands._process.run_process``; the
notify socket belongs to the process, as the signals do.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import sdnotify

from .runtime import ProcessStats

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT_S = 1.0  # a manager that stops reading never holds a process loop up for longer
STATUS_MAX_CHARS = 200  # one line in `systemctl status`
# The counters that say a process is doing its job; any non-zero counter of losses or faults follows them.
HEADLINE_COUNTERS: dict[str, tuple[str, ...]] = {
    "ingest": ("frames_captured", "frames_sent"),
    "worker": ("frames_received", "frames_processed", "results_sent", "prompts_applied"),
    "publisher": ("masks_published", "subscriptions"),
    "view": ("masks_received",),
    "web": ("frames_sent", "prompts_forwarded"),
    "igtl": ("label_maps_sent", "clients_connected"),
    "record": ("frames_queued",),
}
_TROUBLE = re.compile(r"(dropped|failed|rejected|faults|lapped|stale|missed|refused|overwritten)$")


class Notifier:
    """This process's line to systemd; ``Notifier.from_environment()`` makes a silent one unless
    NOTIFY_SOCKET is set. ``clock`` paces the watchdog pings."""

    def __init__(self, sd: sdnotify.SystemdNotifier | None = None, address: str | None = None,
                 watchdog_interval_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._sd, self.address, self.watchdog_interval_s, self._clock = sd, address, watchdog_interval_s, clock
        self._lock = threading.Lock()  # the main loop pings while another thread may report
        self._last_ping: float | None = None
        self._stopping = False
        self._failed = False
        self.freeze_heap = False  # a process of its own (not a test's thread): see ready()

    @classmethod
    def from_environment(cls, clock: Callable[[], float] = time.monotonic) -> Notifier:
        """The notifier systemd's variables describe (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID).
        Without NOTIFY_SOCKET it is silent: no socket is even created."""
        address = os.environ.get("NOTIFY_SOCKET") or None
        if address is None:
            return cls(clock=clock)
        try:
            sd = sdnotify.SystemdNotifier(debug=True)  # debug: raise, so a bad socket is reported, not ignored
        except OSError as exc:
            log.warning("cannot reach the service manager at NOTIFY_SOCKET=%s: %s; readiness and watchdog "
                        "are not reported", address, exc)
            return cls(address=address, clock=clock)
        sd.socket.settimeout(NOTIFY_TIMEOUT_S)
        return cls(sd, address, _watchdog_interval(os.environ), clock)

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (a NOTIFY_SOCKET was set and could be reached)."""
        return self._sd is not None

    def _send(self, message: str) -> None:
        if self._sd is None:
            return
        with self._lock:
            try:
                self._sd.notify(message)
            except OSError as exc:
                if not self._failed:  # once: a manager that went away would otherwise flood the log
                    self._failed = True
                    log.warning("cannot notify the service manager at %s: %s", self.address, exc)

    def ready(self, status: str | None = None) -> None:
        """READY=1 (with a STATUS= line): the process serves. Start-up (model load) comes before it.

        With ``freeze_heap`` (set for the node's processes), everything start-up made (modules, the model,
        settings) is frozen out of the garbage collector's scans first: a full scan of a process that has
        imported torch (about 180,000 objects) takes about 80 ms, a stall a frame or a click would wait on."""
        if self.freeze_heap:
            gc.collect()
            gc.freeze()
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))
        self.watchdog()

    def status(self, text: str) -> None:
        """STATUS=text: what ``systemctl status`` shows under the unit."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """WATCHDOG=1, at most every half WATCHDOG_USEC; nothing when the unit has no watchdog."""
        if self._sd is None or self.watchdog_interval_s is None or self._stopping:
            return
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_interval_s:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """STOPPING=1, once: the process is shutting down (systemd stops expecting watchdog pings)."""
        if self._stopping:
            return
        self._stopping = True
        self._send("STOPPING=1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half the watchdog timeout systemd set for this process (sd_watchdog_enabled), or None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # the watchdog is a parent's (inherited environment), not this process's
    return int(usec) / 1e6 / 2


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= STATUS_MAX_CHARS else line[:STATUS_MAX_CHARS - 3] + "..."


def status_line(stats: ProcessStats) -> str:
    """The key figures of ``stats`` in one line, e.g. 'frames_processed 1234, results_sent 1230; streams 2;
    frames_stale 3': headline counters, the levels (gauges), then every non-zero loss or fault."""
    counters = stats.counters
    headline = HEADLINE_COUNTERS.get(stats.process)
    if headline is None:
        main = [f"{name} {n}" for name, n in sorted(counters.items()) if n and not _TROUBLE.search(name)]
    else:
        main = [f"{name} {counters[name]}" for name in headline]
    levels = [f"{name} {_number(value)}" for name, value in sorted(stats.gauges.items())]
    trouble = [f"{name} {n}" for name, n in sorted(counters.items())
               if n and _TROUBLE.search(name) and name not in (headline or ())]
    return _one_line("; ".join(", ".join(group) for group in (main, levels, trouble) if group)) or "running"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time (UTC, ISO 8601), level, process, pid, logger, message, plus
    ``stream`` and ``frame`` when the call passed them (``extra={"stream": ..., "frame": ...}``) and the
    traceback as ``exception``."""

    EXTRA_FIELDS = ("stream", "frame")

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "process": self.process, "pid": record.process, "logger": record.name,
            "message": record.getMessage()}
        for name in self.EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class StatusReporter:
    """Watchdog pings and a STATUS= line every ``stats.interval_s`` for one process loop: call
    ``pass_done()`` after every pass."""

    def __init__(self, stats: ProcessStats, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats, self.notifier, self._clock = stats, notifier or current(), clock
        self._next_status = clock() + stats.interval_s

    def pass_done(self) -> None:
        notifier = self.notifier
        if not notifier.enabled:
            return
        notifier.watchdog()
        now = self._clock()
        if now >= self._next_status:
            self._next_status = now + self.stats.interval_s
            notifier.status(status_line(self.stats))


async def keep_alive(stats: ProcessStats, notifier: Notifier | None = None) -> None:
    """An event loop's watchdog: pings (and status lines) from a task on that loop until cancelled,
    so a blocked event loop stops them."""
    reporter = StatusReporter(stats, notifier)
    interval = reporter.notifier.watchdog_interval_s
    while reporter.notifier.enabled:
        reporter.pass_done()
        await asyncio.sleep(min(interval or stats.interval_s, stats.interval_s) / 2)


_SILENT = Notifier()
_current: Notifier | None = None


def install(notifier: Notifier | None) -> None:
    """Make ``notifier`` this process's (None: back to the silent one)."""
    global _current
    _current = notifier


def current() -> Notifier:
    """This process's notifier: the one ``install``ed, else a silent one."""
    return _current or _SILENT


__all__ = ["HEADLINE_COUNTERS", "JsonFormatter", "Notifier", "StatusReporter", "current", "install", "keep_alive",
           "status_line"]
