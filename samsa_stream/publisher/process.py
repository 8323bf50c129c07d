"""The publisher process: results in, mask and overlay broadcasts out, with a last-value cache.

Displays subscribe to ``mask/<stream>/`` and ``overlay/<stream>/``. The XPUB socket sees
every subscription, and the publisher answers each with the cached latest messages of the
matching topics, so a late display shows the current state at once. Each display has
its own bounded send buffer: a slow one loses its oldest messages, nobody else waits.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import zmq

from ..protocol import MaskBroadcast, OverlayImage, ProtocolError, SegmentationResult, now_ns, stamp, topic
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import SocketFactory, drain, send_nowait
from ..protocol import encode_image
from .overlay import render_overlay

log = logging.getLogger(__name__)


class Publisher:
    """Turns results into broadcast messages and keeps the latest per topic."""

    def __init__(self, settings: Settings, stats: ProcessStats | None = None) -> None:
        self.settings = settings.publisher
        self.stats = stats or ProcessStats("publisher", settings.log.stats_interval_s)
        self.cache: dict[bytes, list[Any]] = {}
        self.seq = 0
        self._results = 0

    def messages(self, result: SegmentationResult) -> Iterator[tuple[bytes, list[Any]]]:
        """(topic, parts) to broadcast for one result: masks first (cheap, so they go out before
        the overlay is drawn), then an overlay every ``overlay_every`` results."""
        self.seq += 1
        self._results += 1

        def hops() -> list[list[Any]]:
            out = [list(h) for h in result.hops]
            stamp(out, "publisher_out")
            return out

        masks = MaskBroadcast(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                              size=result.rgb.shape[:2], objects=result.objects, engine=result.engine, seq=self.seq,
                              hops=hops(), notices=result.notices)
        yield topic("mask", result.stream_id), masks.to_parts()
        if (self._results - 1) % self.settings.overlay_every == 0:
            image = render_overlay(result.rgb, result.objects, self.settings.overlay_alpha, result.notices)
            data = encode_image(image, self.settings.overlay_format, self.settings.jpeg_quality)
            overlay = OverlayImage(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                                   encoding=self.settings.overlay_format, data=data, seq=self.seq, hops=hops())
            yield topic("overlay", result.stream_id), overlay.to_parts()

    def replay_cache(self, prefix: bytes) -> list[list[Any]]:
        """Cached messages whose topic a new subscription ``prefix`` matches."""
        return [[t, *parts] for t, parts in self.cache.items() if t.startswith(prefix)]


def run_publisher(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    pub = Publisher(settings)
    stats = pub.stats
    log.info("publisher up: results@%s broadcast@%s", settings.endpoints.results, settings.endpoints.broadcast)
    with SocketFactory(settings) as sockets:
        results = sockets.socket("results_in")
        xpub = sockets.socket("broadcast_out")
        poller = zmq.Poller()
        poller.register(results, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(settings.sockets.poll_ms))
            if xpub in ready:
                _answer_subscriptions(xpub, pub)
            if results in ready:
                _broadcast_results(results, xpub, pub)
            stats.maybe_log()
    stats.write(stats_file)
    log.info("publisher stopped: %s", dict(stats.counters))
    return stats


def _answer_subscriptions(xpub: zmq.Socket, pub: Publisher) -> None:
    for (frame,) in drain(xpub):
        event = bytes(frame)
        if event[:1] == b"\x01":  # subscribe; b"\x00" is unsubscribe
            pub.stats.count("subscriptions")
            for parts in pub.replay_cache(event[1:]):
                send_nowait(xpub, parts)
                pub.stats.count("cache_replays")


def _broadcast_results(results: zmq.Socket, xpub: zmq.Socket, pub: Publisher) -> None:
    newest: dict[str, SegmentationResult] = {}
    for parts in drain(results):
        try:
            result = SegmentationResult.from_parts(parts)
        except ProtocolError as exc:
            pub.stats.error("results_rejected", str(exc))
            continue
        if result.stream_id in newest:
            pub.stats.count("results_superseded")  # publisher fell behind: only the newest is worth showing
        newest[result.stream_id] = result
    for result in newest.values():
        stamp(result.hops, "publisher_in")
        try:
            for t, parts in pub.messages(result):
                send_nowait(xpub, [t, *parts])
                pub.cache[t] = parts
                if t.startswith(b"mask/"):
                    pub.stats.count("masks_published")
                    pub.stats.observe("capture_to_published", (now_ns() - result.capture_ns) / 1e6)
        except ValueError as exc:
            pub.stats.error("results_rejected", f"stream {result.stream_id} frame {result.frame_id}: {exc}")
