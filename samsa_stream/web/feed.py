"""From the broadcast to the browsers: a thread that subscribes (the project's Subscriber) and composes
frames, and the hub on the server's event loop that hands each client the newest frame of its stream."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..display.subscriber import Subscriber
from ..protocol import now_ns
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import SocketFactory
from .frames import Frame, LatestSlot, compose

log = logging.getLogger(__name__)

KINDS = ("mask", "image", "stream")  # the page draws the masks itself: no overlay needed
IMAGE_WAIT_S = 0.1  # how long a new mask waits for its frame's image (sent right after it) before going alone


class BroadcastFeed(threading.Thread):
    """Subscribes to every stream's masks, images and stream info and calls ``deliver(frame)`` (from this
    thread) with a newly composed frame whenever a stream changes: a new mask (together with its frame's
    image when one follows it, see publisher.overlay_every), a new image, or a flip of its stale state
    (checked every ``check_ms``, so a silent stream turns stale on time)."""

    def __init__(self, settings: Settings, stats: ProcessStats, deliver: Callable[[Frame], None],
                 check_ms: int = 100) -> None:
        super().__init__(name="web-broadcast", daemon=True)
        self.settings, self.stats, self.deliver, self.check_ms = settings, stats, deliver, check_ms
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.overlay_every = settings.publisher.overlay_every
        self._versions: dict[str, int] = {}
        self._stale: dict[str, bool] = {}
        self._waiting: dict[str, float] = {}  # stream -> when to stop waiting for the image of its newest mask

    def run(self) -> None:
        with SocketFactory(self.settings) as sockets:
            subscriber = Subscriber(self.settings, None, kinds=KINDS, sockets=sockets, stats=self.stats)
            self.ready.set()
            try:
                while not self.stop_event.is_set():
                    self._pass(subscriber)
                    self.stats.maybe_log()
            finally:
                subscriber.close()

    def _pass(self, subscriber: Subscriber) -> None:
        """Wait for updates (at most ``check_ms``), then publish every stream that changed."""
        now = time.monotonic()
        wait_ms = min([self.check_ms, *(max(0, round((d - now) * 1000)) for d in self._waiting.values())])
        first = subscriber.receive(wait_ms)
        changed: set[str] = set()
        for update in [first, *subscriber.drain()] if first is not None else []:
            stream = update.stream_id
            if update.kind == "mask":
                if (update.seq - 1) % self.overlay_every == 0:  # its image follows: show them together
                    self._waiting[stream] = time.monotonic() + IMAGE_WAIT_S
                else:
                    changed.add(stream)
            elif update.kind == "image":
                mask = subscriber.latest(stream, "mask")
                if mask is None or update.seq >= mask.seq or mask.publisher != update.publisher:
                    self._waiting.pop(stream, None)
                    changed.add(stream)
            elif subscriber.latest(stream, "mask") is None:  # stream info before any mask: the legend
                changed.add(stream)
        now = time.monotonic()
        for stream, deadline in list(self._waiting.items()):
            if deadline <= now:  # the image was lost or is late: the masks go alone
                del self._waiting[stream]
                changed.add(stream)
        for stream in set(self._versions) - changed - set(self._waiting):
            if subscriber.stale(stream) != self._stale.get(stream):
                changed.add(stream)
        for stream in sorted(changed - set(self._waiting)):
            self._publish(subscriber, stream)

    def _publish(self, subscriber: Subscriber, stream: str) -> None:
        version = self._versions.get(stream, 0) + 1
        stale = subscriber.stale(stream)
        latest = subscriber.latest
        try:
            frame = compose(stream, version, latest(stream, "mask"), latest(stream, "image"),
                            latest(stream, "stream"), stale, now_ns())
        except Exception as exc:  # one bad composition costs that frame, never the feed
            self.stats.error("frames_failed", f"stream {stream}: {type(exc).__name__}: {exc}")
            log.debug("frame could not be composed", exc_info=True)
            return
        self._versions[stream], self._stale[stream] = version, stale
        self.stats.count("frames_composed")
        self.deliver(frame)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout_s)


_client_ids = itertools.count(1)


@dataclass(eq=False)
class Client:
    """One connected page: its stream, what it is yet to be sent, and whether it may send prompts."""

    remote: str
    stream_id: str
    prompt_refusal: str | None
    id: int = field(default_factory=lambda: next(_client_ids))
    slot: LatestSlot = field(default_factory=LatestSlot)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    connected: float = field(default_factory=time.monotonic)
    prompts: int = 0
    refused: int = 0
    rejected: int = 0

    def summary(self) -> dict[str, object]:
        return {"id": self.id, "remote": self.remote, "stream": self.stream_id, "frames_sent": self.slot.sent,
                "frames_skipped": self.slot.skipped, "may_prompt": self.prompt_refusal is None,
                "prompts": self.prompts, "prompts_refused": self.refused, "messages_rejected": self.rejected,
                "connected_s": round(time.monotonic() - self.connected, 1)}


class Hub:
    """The newest frame of every stream and the connected clients; used on the event loop only."""

    def __init__(self) -> None:
        self.latest: dict[str, Frame] = {}
        self.clients: set[Client] = set()

    def publish(self, frame: Frame) -> None:
        self.latest[frame.stream_id] = frame
        for client in self.clients:
            if client.stream_id == frame.stream_id:
                client.slot.offer(frame)
                client.wake.set()

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.select(client, client.stream_id)

    def select(self, client: Client, stream_id: str) -> None:
        """Show ``stream_id`` to ``client`` from now on, starting with its newest frame."""
        client.stream_id = stream_id
        client.slot.reset()
        frame = self.latest.get(stream_id)
        if frame is not None:
            client.slot.offer(frame)
        client.wake.set()

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def streams(self) -> list[dict[str, object]]:
        """Every stream seen so far, with whether it is stale now (for the page's stream picker)."""
        return [{"stream": s, "stale": f.header.get("stale", False), "frame_id": f.header.get("frame_id")}
                for s, f in sorted(self.latest.items())]


__all__ = ["BroadcastFeed", "Client", "Hub"]
