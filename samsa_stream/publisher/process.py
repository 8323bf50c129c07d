"""The publisher process: results in, mask and overlay broadcasts out, with a last-value cache.

Displays subscribe to ``mask/<stream>/`` and ``overlay/<stream>/``. The XPUB socket sees
every subscription, and the publisher answers each with the cached latest messages of the
matching topics (at a limited rate, see ``replay``), so a late display shows the current
state at once. Each display has its own bounded send buffer: a slow one loses its oldest
messages, nobody else waits. Every broadcast carries ``seq`` (per stream, +1 per result) and
this run's ``publisher`` id, so displays can tell replays and restarts from new messages.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ProtocolError
from ..protocol import MaskBroadcast, OverlayImage, SegmentationResult, encode_image, now_ns, stamp, topic
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import PollLoop, SocketFactory, drain, send_nowait
from .overlay import render_overlay
from .replay import ReplayLimiter

log = logging.getLogger(__name__)

Broadcast = list[Any]  # [topic, header, array parts...], ready to send on the XPUB socket


class Publisher:
    """Turns results into broadcast messages, keeps the latest per topic and answers subscriptions.

    No method raises for bad input: a result that does not decode, render or encode and an
    upstream message that is not a subscription are counted (``results_rejected``,
    ``upstream_ignored``) and skipped."""

    def __init__(self, settings: Settings, stats: ProcessStats | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings.publisher
        self.stats = stats or ProcessStats("publisher", settings.log.stats_interval_s)
        self.instance = secrets.token_hex(8)  # this run's id: displays restart their seq tracking on a new one
        self.stats.info["publisher"] = self.instance
        self.cache: dict[bytes, list[Any]] = {}
        self.seq: dict[str, int] = {}  # per stream, so a display of one stream sees no gaps from others
        self.replays = ReplayLimiter(self.settings.replay_min_interval_ms / 1000, self.settings.replay_max_per_s)
        self.clock = clock

    def messages(self, result: SegmentationResult) -> Iterator[tuple[bytes, list[Any]]]:
        """(topic, parts) to broadcast for one result: masks first (cheap, so they go out before
        the overlay is drawn), then an overlay every ``overlay_every`` results of the stream.
        Raises whatever encoding or rendering raises; the stream's ``seq`` advances once the masks are encoded."""
        seq = self.seq.get(result.stream_id, 0) + 1

        def hops() -> list[list[Any]]:
            out = [list(h) for h in result.hops]
            stamp(out, "publisher_out")
            return out

        masks = MaskBroadcast(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                              size=result.rgb.shape[:2], objects=result.objects, engine=result.engine, seq=seq,
                              hops=hops(), notices=result.notices, publisher=self.instance)
        parts = masks.to_parts()
        self.seq[result.stream_id] = seq
        yield topic("mask", result.stream_id), parts
        if (seq - 1) % self.settings.overlay_every == 0:
            image = render_overlay(result.rgb, result.objects, self.settings.overlay_alpha, result.notices)
            data = encode_image(image, self.settings.overlay_format, self.settings.jpeg_quality)
            overlay = OverlayImage(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                                   encoding=self.settings.overlay_format, data=data, seq=seq, hops=hops(),
                                   publisher=self.instance)
            yield topic("overlay", result.stream_id), overlay.to_parts()

    def on_results(self, messages: Iterable[list[Any]]) -> Iterator[Broadcast]:
        """Broadcasts for received ``result`` messages: the newest per stream only (the rest is counted as
        superseded: the publisher fell behind, and only the newest is worth showing)."""
        newest: dict[str, SegmentationResult] = {}
        for parts in messages:
            try:
                result = SegmentationResult.from_parts(parts)
            except ProtocolError as exc:
                self.stats.error("results_rejected", str(exc))
                continue
            if result.stream_id in newest:
                self.stats.count("results_superseded")
            newest[result.stream_id] = result
        for result in newest.values():
            yield from self.publish(result)

    def publish(self, result: SegmentationResult) -> Iterator[Broadcast]:
        """Broadcasts for one decoded result, each cached per topic as it is yielded (send it then: the masks
        go out before the overlay is drawn). A result whose masks fail to encode is a counted rejection
        (``results_rejected``); an overlay that fails to render or encode costs only the overlay
        (``overlays_failed``)."""
        stamp(result.hops, "publisher_in")
        published = False
        try:
            for t, parts in self.messages(result):
                self.cache[t] = parts
                if not published:
                    published = True
                    self.stats.count("masks_published")
                    self.stats.observe("capture_to_published", (now_ns() - result.capture_ns) / 1e6)
                yield [t, *parts]
        except Exception as exc:  # one bad result costs that result (or its overlay), never the broadcast
            self.stats.error("overlays_failed" if published else "results_rejected",
                             f"stream {result.stream_id} frame {result.frame_id}: {type(exc).__name__}: {exc}")
            log.debug("result could not be published", exc_info=True)

    def on_upstream(self, messages: Iterable[list[Any]]) -> list[Broadcast]:
        """Replays for what displays sent upstream on the XPUB socket. A subscription is one part: byte 1, then
        the prefix (byte 0: unsubscription); anything else (more parts, empty, other bytes) is ignored and counted."""
        out: list[Broadcast] = []
        for parts in messages:
            event = bytes(parts[0]) if len(parts) == 1 else b""
            if event[:1] == b"\x00":
                self.stats.count("unsubscriptions")
            elif event[:1] == b"\x01":
                self.stats.count("subscriptions")
                out.extend(self._subscribed(event[1:]))
            else:
                self.stats.count("upstream_ignored")
        return out

    def due_replays(self) -> list[Broadcast]:
        """Replays held back by the rate limits that may go out now."""
        out: list[Broadcast] = []
        for prefix in self.replays.due(self.clock()):
            out.extend(self._replay(prefix))
        return out

    def replay_cache(self, prefix: bytes) -> list[Broadcast]:
        """Cached messages whose topic a subscription ``prefix`` matches."""
        return [[t, *parts] for t, parts in self.cache.items() if t.startswith(prefix)]

    def _subscribed(self, prefix: bytes) -> list[Broadcast]:
        if not any(t.startswith(prefix) for t in self.cache):
            return []  # nothing cached under it: nothing to replay, nothing to limit
        if self.replays.request(prefix, self.clock()):
            return self._replay(prefix)
        self.stats.count("replays_suppressed")  # folded into one later replay of the prefix
        return []

    def _replay(self, prefix: bytes) -> list[Broadcast]:
        out = self.replay_cache(prefix)
        self.stats.count("replays")
        self.stats.count("replay_messages", len(out))
        return out


def run_publisher(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    pub = Publisher(settings)
    stats = pub.stats
    log.info("publisher %s up: results@%s broadcast@%s", pub.instance, settings.endpoints.results,
             settings.endpoints.broadcast)
    with SocketFactory(settings) as sockets:
        results = sockets.socket("results_in")
        xpub = sockets.socket("broadcast_out")

        def send(broadcasts: Iterable[Broadcast]) -> None:
            for parts in broadcasts:
                if not send_nowait(xpub, parts):
                    stats.count("broadcasts_dropped")

        loop = PollLoop(stop, settings.sockets.poll_ms, stats)
        # Results first: a subscription answered in the same pass then gets the newest state.
        loop.add(results, lambda: send(pub.on_results(drain(results))))
        loop.add(xpub, lambda: send(pub.on_upstream(drain(xpub))))
        loop.run(tick=lambda: send(pub.due_replays()))
    stats.write(stats_file)
    log.info("publisher stopped: %s", dict(stats.counters))
    return stats
