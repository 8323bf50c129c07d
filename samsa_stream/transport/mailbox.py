"""A bounded hand-over between threads that a poll loop can wait on like a socket.

``fileno()`` is the read end of a pipe that holds a byte while the mailbox holds an item, so
``PollLoop.add(mailbox, handler)`` wakes the loop when something arrives. Used by the
in-process frame link and result sink (tests) and by ingest's capture reader thread.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """At most ``capacity`` items; ``put`` refuses (False) when full, never blocks and never grows."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a mailbox holds at least one item, got capacity {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    def fileno(self) -> int:
        return self._read

    def _signal(self) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:  # the pipe is full of wake-ups already: it is readable
            pass

    def _clear_signal(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def put(self, item: T) -> bool:
        """Add ``item``; False (nothing added) when the mailbox is full or closed."""
        with self._lock:
            if self._closed or len(self._items) >= self.capacity:
                return False
            self._items.append(item)
            self._signal()
        return True

    def put_wait(self, item: T, stop: threading.Event, poll_s: float = 0.1) -> bool:
        """Add ``item``, waiting while the mailbox is full; False if ``stop`` is set first."""
        while not stop.is_set():
            if self.put(item):
                return True
            stop.wait(poll_s)
        return False

    def take(self) -> T | None:
        """The oldest item, or None when empty."""
        with self._lock:
            if self._closed:
                return None
            self._clear_signal()  # before taking, so an item added meanwhile leaves its own wake-up
            item = self._items.popleft() if self._items else None
            if self._items:
                self._signal()
        return item

    def take_all(self) -> list[T]:
        """Every item, oldest first."""
        with self._lock:
            if self._closed:
                return []
            self._clear_signal()
            items = list(self._items)
            self._items.clear()
        return items

    def close(self) -> None:
        """Drop what is held and close the pipe; later puts refuse, takes return nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            os.close(self._read)
            os.close(self._write)
