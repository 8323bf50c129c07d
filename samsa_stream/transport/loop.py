"""The one poll loop every process runs: wait on its sockets, hand each ready socket to its handler.

Besides zmq sockets, anything with a ``fileno()`` (or a plain file descriptor) can be waited on,
such as a ``Mailbox`` between threads; the handler then gets called while it is readable.

A handler that raises costs that one pass, never the process: the fault is counted
(``loop_faults``) and logged with its traceback, and the loop goes on. Handlers turn the
malformed messages they expect into counted rejections themselves; this guard is the last line.

Every pass ends with a watchdog ping to systemd (``supervision``), and every stats interval with a
status line: a pass that never ends (a stuck CUDA call, a blocked read) stops the pings, and systemd
restarts the process. When ``run`` ends the process is shutting down, and says so (STOPPING=1).
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..runtime import ProcessStats
from ..supervision import Notifier, StatusReporter

log = logging.getLogger(__name__)


class PollLoop:
    """``add`` a socket with its handler, then ``run`` until ``stop`` is set (or ``tick`` returns True)."""

    def __init__(self, stop: threading.Event, poll_ms: int, stats: ProcessStats,
                 notifier: Notifier | None = None) -> None:
        """``notifier`` defaults to this process's (``supervision.current()``)."""
        self.stop, self.poll_ms, self.stats = stop, poll_ms, stats
        self._reporter = StatusReporter(stats, notifier)
        self._poller = zmq.Poller()
        self._handlers: list[tuple[Any, Callable[[], Any]]] = []

    @staticmethod
    def _key(sock: Any) -> Any:
        """What the poller reports a ready source as: the zmq socket itself, or a plain fd's number."""
        if isinstance(sock, zmq.Socket):
            return sock
        return sock if isinstance(sock, int) else sock.fileno()

    def add(self, sock: Any, handler: Callable[[], Any]) -> None:
        """Call ``handler()`` whenever ``sock`` (a zmq socket, a file descriptor or an object with
        ``fileno()``) has something to read."""
        key = self._key(sock)
        self._poller.register(key, zmq.POLLIN)
        self._handlers.append((key, handler))

    def ready(self, sock: Any) -> bool:
        """Whether ``sock`` has something to read right now (for serving it between slower steps)."""
        key = self._key(sock)
        if isinstance(key, zmq.Socket):
            return bool(key.poll(0, zmq.POLLIN))
        return bool(select.select([key], [], [], 0)[0])

    def guarded(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``; an exception is counted and logged with its traceback, and None returned."""
        try:
            return fn()
        except Exception:  # the process outlives any one message or step
            self.stats.count("loop_faults")
            log.exception("%s failed; the loop goes on", what)
            return None

    def run_once(self, timeout_ms: int | None = None) -> None:
        """Wait up to ``timeout_ms`` (default ``poll_ms``) and serve every socket that became ready."""
        events = dict(self._poller.poll(self.poll_ms if timeout_ms is None else timeout_ms))
        for sock, handler in self._handlers:
            if sock in events:
                self.guarded(f"handling {sock!r}", handler)
        self._reporter.pass_done()

    def run(self, tick: Callable[[], bool | None] | None = None, pending: Callable[[], bool] | None = None) -> None:
        """Serve until ``stop`` is set; ``tick()`` runs after every pass and ends the loop by returning True.
        While ``pending()`` says work is waiting (e.g. a prompt served during the last tick), the next pass
        only looks for ready sockets instead of waiting up to ``poll_ms`` for one."""
        try:
            while not self.stop.is_set():
                self.run_once(0 if pending is not None and pending() else None)
                if tick is not None and self.guarded("loop step", tick) is True:
                    return
                self.stats.maybe_log()
        finally:
            self._reporter.notifier.stopping()  # before the closing work, which the watchdog must not time
