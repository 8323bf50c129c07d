"""The publisher process: results in, mask and overlay broadcasts out, with a last-value cache.

Displays subscribe to ``<kind>/<stream>/``: ``mask`` (every result), ``stream`` (the stream's
metadata and liveness, every result), ``overlay`` and ``image`` (the pseudo-RGB with and without
the masks drawn in, every ``publisher.overlay_every`` results). The XPUB socket sees every
subscription, and the publisher answers each with the cached latest messages of the matching
topics (at a limited rate, see ``replay``), so a late display shows the current state at once.

Staleness: when a stream's newest result is older than ``display.stale_after_s`` (worker stalled,
camera stopped), the publisher sends, once, a ``stream`` message marked stale and the last overlay
redrawn with the stale marker (both cached, so a display that joins later learns it too); the
next result is live again. Displays also judge staleness by their own clock (the publisher may be
the one that stopped). Each display has its own bounded send buffer: a slow one loses its oldest
messages, nobody else waits. Every broadcast carries ``seq`` (per stream, +1 per result) and
this run's ``publisher`` id, so displays can tell replays and restarts from new messages.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .. import supervision
from ..errors import ProtocolError
from ..protocol import (
    FrameImage,
    MaskBroadcast,
    OverlayImage,
    PromptEvent,
    SegmentationResult,
    StreamInfo,
    encode_image,
    now_ns,
    stamp,
    topic,
)
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import PollLoop, SocketFactory, drain, send_nowait
from .overlay import render_overlay
from .replay import ReplayLimiter

log = logging.getLogger(__name__)

Broadcast = list[Any]  # [topic, header, array parts...], ready to send on the XPUB socket
MAX_TRACKED_PREFIXES = 4096  # distinct subscription prefixes counted as displays (a peer could invent endless ones)


@dataclass
class _Newest:
    """A stream's newest result, kept to tell and show when it goes stale."""

    result: SegmentationResult
    seq: int
    received: float  # publisher clock
    stale: bool = False


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
        self.stale_after_s = settings.display.stale_after_s
        self.newest: dict[str, _Newest] = {}
        self.subscriptions: Counter[bytes] = Counter()  # active subscriptions per prefix
        self.prompt_seq: dict[str, int] = {}

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
        self.newest[result.stream_id] = _Newest(result, seq, self.clock())
        yield topic("mask", result.stream_id), parts
        yield topic("stream", result.stream_id), self.stream_info(result.stream_id).to_parts()
        if (seq - 1) % self.settings.overlay_every == 0:
            yield topic("overlay", result.stream_id), self.overlay(result, seq, hops()).to_parts()
            data = encode_image(result.rgb, self.settings.overlay_format, self.settings.jpeg_quality)
            plain = FrameImage(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                               encoding=self.settings.overlay_format, data=data, seq=seq, hops=hops(),
                               publisher=self.instance)
            yield topic("image", result.stream_id), plain.to_parts()

    def overlay(self, result: SegmentationResult, seq: int, hops: list[list[Any]],
                stale_s: float | None = None) -> OverlayImage:
        """The result's overlay message (with the stale marker when ``stale_s`` is given)."""
        image = render_overlay(result.rgb, result.objects, self.settings.overlay_alpha, result.notices, stale_s=stale_s)
        data = encode_image(image, self.settings.overlay_format, self.settings.jpeg_quality)
        return OverlayImage(stream_id=result.stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                            encoding=self.settings.overlay_format, data=data, seq=seq, hops=hops,
                            publisher=self.instance, stale=stale_s is not None)

    def stream_info(self, stream_id: str) -> StreamInfo:
        """The stream's metadata and liveness as of now (its newest result must exist)."""
        newest = self.newest[stream_id]
        result = newest.result
        return StreamInfo(stream_id=stream_id, frame_id=result.frame_id, capture_ns=result.capture_ns,
                          size=(int(result.rgb.shape[0]), int(result.rgb.shape[1])), engine=result.engine,
                          wavelengths_nm=list(result.wavelengths_nm), notices=list(result.notices),
                          objects=[o.meta() for o in result.objects], stale=newest.stale,
                          age_ms=round(max(0.0, self.clock() - newest.received) * 1000, 1), seq=newest.seq,
                          hops=[list(h) for h in result.hops], publisher=self.instance,
                          displays=self.displays(stream_id))

    def displays(self, stream_id: str) -> int:
        """Subscriptions held to ``stream_id``'s masks (a display of every stream counts too)."""
        mask_topic = topic("mask", stream_id)
        return sum(n for prefix, n in self.subscriptions.items() if n > 0 and mask_topic.startswith(prefix))

    def due_stale(self) -> list[Broadcast]:
        """For each stream that has just gone stale: its stream message marked stale and its overlay with
        the stale marker, cached for displays that join later (see the module doc)."""
        out: list[Broadcast] = []
        now = self.clock()
        for stream_id, newest in self.newest.items():
            age = now - newest.received
            if newest.stale or age <= self.stale_after_s:
                continue
            newest.stale = True
            self.stats.count("streams_gone_stale")
            log.info("stream %s is stale: no result for %.1f s", stream_id, age)
            messages = [(topic("stream", stream_id), self.stream_info(stream_id).to_parts())]
            try:
                stale = self.overlay(newest.result, newest.seq, [list(h) for h in newest.result.hops], stale_s=age)
                messages.append((topic("overlay", stream_id), stale.to_parts()))
            except Exception as exc:  # the stream message still goes out
                self.stats.error("overlays_failed", f"stale overlay of {stream_id}: {type(exc).__name__}: {exc}")
            for t, parts in messages:
                self.cache[t] = parts
                out.append([t, *parts])
        return out

    def on_results(self, messages: Iterable[list[Any]]) -> Iterator[Broadcast]:
        """Broadcasts for received ``result`` and ``prompt_event`` messages. Of a stream's results, the
        newest only (the rest is counted as superseded: the publisher fell behind, and only the newest
        is worth showing); a prompt event goes out after the results that came before it and before
        those after it, so recorders see clicks where they happened."""
        newest: dict[str, SegmentationResult] = {}
        for parts in messages:
            try:
                if _message_type(parts) == PromptEvent.TYPE:
                    event = PromptEvent.from_parts(parts)
                    if event.stream_id in newest:
                        yield from self.publish(newest.pop(event.stream_id))
                    yield self.prompt_event(event)
                    continue
                result = SegmentationResult.from_parts(parts)
            except ProtocolError as exc:
                self.stats.error("results_rejected", str(exc))
                continue
            if result.stream_id in newest:
                self.stats.count("results_superseded")
            newest[result.stream_id] = result
        for result in newest.values():
            yield from self.publish(result)

    def prompt_event(self, event: PromptEvent) -> Broadcast:
        """The broadcast of one prompt event, numbered per stream (not cached: it is news only once)."""
        seq = self.prompt_seq.get(event.stream_id, 0) + 1
        self.prompt_seq[event.stream_id] = seq
        self.stats.count("prompt_events_published")
        out = PromptEvent(**{**event.__dict__, "seq": seq, "publisher": self.instance})
        return [topic("prompt", event.stream_id), *out.to_parts()]

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
                prefix = event[1:]
                if self.subscriptions.get(prefix, 0) > 1:
                    self.subscriptions[prefix] -= 1
                else:
                    self.subscriptions.pop(prefix, None)  # gone: a peer cycling prefixes leaves nothing behind
            elif event[:1] == b"\x01":
                self.stats.count("subscriptions")
                if event[1:] in self.subscriptions or len(self.subscriptions) < MAX_TRACKED_PREFIXES:
                    self.subscriptions[event[1:]] += 1
                else:
                    self.stats.count("subscriptions_untracked")  # still served; only not counted as a display
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


def _message_type(parts: list[Any]) -> Any:
    """The ``type`` a message's header names (None when the header cannot be read: its decoder says why)."""
    try:
        header = msgpack.unpackb(bytes(parts[0]) if parts else b"", raw=False)
    except Exception:  # any unreadable header: the full decode names the problem
        return None
    return header.get("type") if isinstance(header, dict) else None


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
        supervision.current().ready("bound: results and broadcast")
        loop.run(tick=lambda: send([*pub.due_replays(), *pub.due_stale()]))
    stats.write(stats_file)
    log.info("publisher stopped: %s", dict(stats.counters))
    return stats
