"""The one client of the broadcast link: every display, the recorder, bridges and tests subscribe through it.

``Subscriber(settings, streams=["cam0"])`` connects a SUB socket to ``endpoints.broadcast``,
subscribes to ``<kind>/<stream>/`` for the kinds asked for (``mask``, ``overlay``: the masks drawn
in, ``image``: the pseudo-RGB alone, ``stream``: the stream's metadata and whether it is live) and
turns each message into an ``Update`` (masks decoded, images decoded to RGB), or into a counted
rejection. ``stale(stream)`` says whether the newest mask may not be shown as live.

Replay / instance rule. The publisher numbers its broadcasts per stream (``seq``, +1 per
result) and names its run (``publisher``, a random id per start). Per stream and kind the
subscriber remembers the last (publisher, seq) it delivered:

- same publisher, ``seq`` not above the last: a last-value replay meant for a newly joined
  display; ignored and counted (``replays_ignored``);
- same publisher, ``seq`` more than one above the last mask: the gap is counted
  (``masks_missed``; overlays go out every ``publisher.overlay_every``-th result, so their gaps are not);
- another publisher: the publisher restarted and counts from 1 again; tracking starts over
  from this message, which is delivered (``publisher_changes``).

A ``stream`` or ``overlay`` message repeats its result's ``seq`` when the publisher marks the
stream stale: a change of ``stale`` at the same ``seq`` is new, not a replay.

A message is rejected (``messages_rejected``, with the reason in ``stats.errors``) when it does
not decode, when its topic is not exactly ``<kind>/<stream>/`` for a subscribed kind and
stream, or when its header's ``stream`` differs from the topic's. No malformed message raises.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zmq

from ..errors import CommandError, ProtocolError
from ..protocol import (
    FrameImage,
    MaskBroadcast,
    OverlayImage,
    PromptEvent,
    StreamInfo,
    check_stream_id,
    decode_image,
    now_ns,
    topic,
)
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import SocketFactory, drain

Kind = Literal["mask", "overlay", "image", "stream", "prompt"]
KINDS: tuple[Kind, ...] = ("mask", "overlay")  # what a display subscribes to unless it asks for others
ALL_KINDS: tuple[Kind, ...] = ("mask", "overlay", "image", "stream", "prompt")
_DECODERS: dict[str, Any] = {"mask": MaskBroadcast, "overlay": OverlayImage, "image": FrameImage,
                             "stream": StreamInfo, "prompt": PromptEvent}
_MAX_TOPIC = 80  # bytes: the longest kind, a 64-character stream id and two slashes fit


@dataclass(frozen=True)
class Update:
    """One new broadcast of one stream: ``masks`` for kind ``mask``; ``overlay`` and ``image`` for ``overlay``;
    ``overlay`` (the FrameImage message) and ``image`` for ``image``; ``info`` for ``stream``."""

    kind: Kind
    stream_id: str
    frame_id: int
    seq: int
    publisher: str
    received_ns: int
    missed: int = 0  # mask messages of this stream lost just before this one (seq gap)
    masks: MaskBroadcast | None = None
    overlay: OverlayImage | None = None
    image: np.ndarray | None = None  # the overlay or frame image decoded: RGB uint8 (H, W, 3)
    info: StreamInfo | None = None
    event: PromptEvent | None = None  # for ``prompt``: a prompt the worker handled


@dataclass
class _Track:
    publisher: str
    seq: int
    stale: bool = False


class Subscriber:
    """Subscribes to ``streams`` (None: every stream) and ``kinds``; ``receive`` returns the next new ``Update``.

    ``sockets`` shares a SocketFactory with other sockets of the process (closed by its owner);
    ``stats`` collects the counters (a new ProcessStats when None). ``socket`` is the SUB socket,
    for a poll loop that calls ``drain`` when it is readable."""

    def __init__(self, settings: Settings, streams: Iterable[str] | None = None, kinds: Iterable[str] = KINDS,
                 sockets: SocketFactory | None = None, stats: ProcessStats | None = None) -> None:
        self.kinds: tuple[Kind, ...] = tuple(dict.fromkeys(_kind(k) for k in kinds))
        if not self.kinds:
            raise CommandError(f"subscribe to at least one kind of message ({', '.join(KINDS)})")
        try:
            self.streams: frozenset[str] | None = (
                None if streams is None else frozenset(check_stream_id(s) for s in streams))
        except ProtocolError as exc:
            raise CommandError(str(exc)) from None
        if self.streams is not None and not self.streams:
            raise CommandError("subscribe to at least one stream (or to every stream with streams=None)")
        self.stats = stats or ProcessStats("subscriber", settings.log.stats_interval_s)
        self.stale_after_ns = int(settings.display.stale_after_s * 1e9)
        self._own_sockets = sockets is None
        self._sockets = sockets or SocketFactory(settings)
        self.socket: zmq.Socket = self._sockets.socket("broadcast_in", subscribe=None)
        for prefix in self.prefixes():
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self._tracks: dict[tuple[str, Kind], _Track] = {}
        self._latest: dict[tuple[str, Kind], Update] = {}

    def prefixes(self) -> list[bytes]:
        """The topic prefixes this subscriber subscribes to."""
        if self.streams is None:
            return [f"{kind}/".encode() for kind in self.kinds]
        return [topic(kind, stream) for kind in self.kinds for stream in sorted(self.streams)]

    def receive(self, timeout_ms: int = 0) -> Update | None:
        """The next new update within ``timeout_ms``, or None; replays and rejected messages are skipped."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            left_ms = max(0, round((deadline - time.monotonic()) * 1000))
            if not self.socket.poll(left_ms, zmq.POLLIN):
                return None
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            update = self.handle(parts)
            if update is not None:
                return update

    def drain(self, limit: int = 1000) -> list[Update]:
        """Every new update among the messages already waiting (at most ``limit`` messages read)."""
        return [u for u in (self.handle(parts) for parts in drain(self.socket, limit)) if u is not None]

    def handle(self, parts: list[Any]) -> Update | None:
        """One received message (topic first): the new update it carries, or None (replay or rejection)."""
        received = now_ns()
        try:
            kind, stream = self._topic(parts)
            message: MaskBroadcast | OverlayImage | StreamInfo | PromptEvent = _DECODERS[kind].from_parts(parts[1:])
            if message.stream_id != stream:
                raise ProtocolError(f"{kind} message of stream {message.stream_id!r} came on the topic of {stream!r}")
        except ProtocolError as exc:
            self.stats.error("messages_rejected", str(exc))
            return None
        track = self._tracks.get((stream, kind))
        missed = 0
        stale = isinstance(message, (StreamInfo, OverlayImage)) and message.stale
        if track is not None and track.publisher == message.publisher:
            if message.seq < track.seq or (message.seq == track.seq and stale == track.stale):
                self.stats.count("replays_ignored")  # meant for a display that joined after this one
                return None
            missed = message.seq - track.seq - 1 if kind == "mask" else 0
        image = None
        if isinstance(message, OverlayImage):
            try:
                image = decode_image(message.data)
            except ProtocolError as exc:
                self.stats.error("messages_rejected", f"overlay of {stream} frame {message.frame_id}: {exc}")
                return None
        if track is not None and track.publisher != message.publisher:
            self.stats.count("publisher_changes")  # a restarted publisher counts from 1 again
        self._tracks[(stream, kind)] = _Track(message.publisher, message.seq, stale)
        if isinstance(message, MaskBroadcast):
            update = Update("mask", stream, message.frame_id, message.seq, message.publisher, received, missed,
                            masks=message)
            self.stats.count("masks_received")
            if missed:
                self.stats.count("masks_missed", missed)
            self.stats.observe("capture_to_display", (received - message.capture_ns) / 1e6)
        elif isinstance(message, PromptEvent):
            update = Update("prompt", stream, message.frame_id or 0, message.seq, message.publisher, received,
                            event=message)
            self.stats.count("prompt_events_received")
        elif isinstance(message, StreamInfo):
            update = Update("stream", stream, message.frame_id, message.seq, message.publisher, received, info=message)
            self.stats.count("stream_infos_received")
        else:
            update = Update(kind, stream, message.frame_id, message.seq, message.publisher, received,
                            overlay=message, image=image)
            self.stats.count("overlays_received" if kind == "overlay" else "images_received")
        self._latest[(stream, kind)] = update
        return update

    def stale(self, stream: str, now: int | None = None) -> bool:
        """Whether ``stream``'s newest mask must not be shown as live: the publisher said the stream is
        stale, or no new mask reached this display for ``display.stale_after_s`` (its own clock, so a
        stopped publisher or a broken link counts too). False before any mask arrived."""
        latest = self._latest.get((stream, "mask"))
        if latest is None:
            return False
        info = self._latest.get((stream, "stream"))
        if info is not None and info.info is not None and info.info.stale and info.seq >= latest.seq:
            return True
        return (now_ns() if now is None else now) - latest.received_ns > self.stale_after_ns

    def mask_age_s(self, stream: str, now: int | None = None) -> float | None:
        """Seconds since this display received ``stream``'s newest mask (None before any)."""
        latest = self._latest.get((stream, "mask"))
        return None if latest is None else ((now_ns() if now is None else now) - latest.received_ns) / 1e9

    def latest(self, stream: str, kind: Kind = "mask") -> Update | None:
        """The newest update of ``stream`` and ``kind`` delivered so far."""
        return self._latest.get((stream, kind))

    def _topic(self, parts: list[Any]) -> tuple[Kind, str]:
        """(kind, stream) of a topic that is exactly ``<kind>/<stream id>/`` and one this display asked for."""
        if len(parts) < 2:
            raise ProtocolError(f"broadcast message has {len(parts)} part(s); expected a topic, then a header")
        raw = bytes(parts[0])
        head, _, rest = raw[:_MAX_TOPIC + 1].partition(b"/")
        kinds = {k.encode(): k for k in ALL_KINDS}
        if len(raw) > _MAX_TOPIC or head not in kinds or not rest.endswith(b"/"):
            raise ProtocolError(f"topic {raw[:_MAX_TOPIC]!r} is not <{'|'.join(ALL_KINDS)}>/<stream id>/")
        # A SUB socket matches prefixes: 'mask/cam0/x/' reaches a 'mask/cam0/' subscriber unless checked here.
        stream = check_stream_id(rest[:-1].decode("ascii", "replace"), f"topic {raw!r}")
        kind = kinds[head]
        if kind not in self.kinds or (self.streams is not None and stream not in self.streams):
            raise ProtocolError(f"topic {raw!r} is not one this display subscribed to")
        return kind, stream

    def close(self) -> None:
        self.socket.close(0)
        if self._own_sockets:
            self._sockets.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _kind(value: str) -> Kind:
    for kind in ALL_KINDS:
        if value == kind:
            return kind
    raise CommandError(f"kind {value!r} is not one of {', '.join(ALL_KINDS)}")


__all__ = ["ALL_KINDS", "KINDS", "Kind", "Subscriber", "Update"]
