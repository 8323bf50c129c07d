"""How often the last-value cache may be replayed.

XPUB says that someone subscribed to a prefix, not who: a replay goes to every display
subscribed to the matching topics, so a peer re-subscribing in a loop would multiply every
display's traffic. Each prefix gets at most one replay per ``min_interval_s`` and all prefixes
together at most ``max_per_s`` per second. A subscription that comes too soon is not lost: its
prefix is replayed once as soon as the limits allow, so a display that joins meanwhile still
gets the current state, at most one interval late.
"""

from __future__ import annotations

from collections import deque

_FORGET_AFTER = 1024  # prefixes remembered before old ones are forgotten (all of them matched a cached topic)


class ReplayLimiter:
    """Decides when a subscription prefix may be replayed; times are ``time.monotonic()`` seconds."""

    def __init__(self, min_interval_s: float, max_per_s: int) -> None:
        self.min_interval_s = min_interval_s
        self.max_per_s = max_per_s
        self._last: dict[bytes, float] = {}
        self._pending: dict[bytes, None] = {}  # ordered set: first come, first replayed
        self._recent: deque[float] = deque()  # replay times within the last second

    def request(self, prefix: bytes, now: float) -> bool:
        """Whether ``prefix`` may be replayed now; if not, it is replayed later (see ``due``)."""
        if prefix not in self._pending and self._ready(prefix, now):
            self._take(prefix, now)
            return True
        self._pending[prefix] = None
        return False

    def due(self, now: float) -> list[bytes]:
        """Pending prefixes whose replay the limits allow now (each is then no longer pending)."""
        out = []
        for prefix in list(self._pending):
            if self._ready(prefix, now):
                del self._pending[prefix]
                self._take(prefix, now)
                out.append(prefix)
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _ready(self, prefix: bytes, now: float) -> bool:
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        last = self._last.get(prefix)
        return (last is None or now - last >= self.min_interval_s) and len(self._recent) < self.max_per_s

    def _take(self, prefix: bytes, now: float) -> None:
        self._recent.append(now)
        self._last[prefix] = now
        if len(self._last) > _FORGET_AFTER:
            self._last = {p: t for p, t in self._last.items() if now - t < self.min_interval_s}
