"""The links between the pipeline's processes, each one interface with interchangeable implementations.

Frame link (ingest -> worker): a ``FrameLink`` makes the two ends, a ``FrameSender`` (``send``)
and a ``FrameReceiver`` (``receive``, ``intact``). Implementations:

- ``SocketFrameLink``: frames travel in the message (PUB/SUB) or, on a same-host link with
  shared memory on, the cube goes into a ring of shared-memory slots (``shm``) and only its
  descriptor (``cube_ref``) travels. The receiver accepts a ``cube_ref`` only on ipc:// and
  inproc:// links; on tcp:// it is a rejection.
- ``InProcessLink``: a bounded mailbox between threads, no sockets and no processes (tests);
  optionally through shared memory as well.

Result sink (worker -> publisher): ``SocketResultSink`` (PUSH) or ``InProcessResultSink``.

Receivers turn every bad message into a counted, logged rejection and never raise for one:
``frames_rejected`` (malformed), ``frames_lapped`` (its shared-memory slot was reused before the
frame was read: a drop, not a fault). Which link a process gets is decided in ``frame_link``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import zmq

from ..errors import ProtocolError, TransportError
from ..protocol import CubeFrame, PromptEvent, SegmentationResult, now_ns, stamp, topic
from ..runtime import ProcessStats
from ..settings import Settings
from .mailbox import Mailbox
from .shm import ShmReader, ShmRef, ShmWriter, SlotLapped
from .sockets import SocketFactory, drain, send_nowait

log = logging.getLogger(__name__)

SAME_HOST_SCHEMES = ("ipc://", "inproc://")


def same_host(endpoint: str) -> bool:
    """Whether ``endpoint`` can only connect processes of this host (ipc://, inproc://)."""
    return endpoint.startswith(SAME_HOST_SCHEMES)


def uses_shared_memory(mode: str, endpoint: str) -> bool:
    """Whether frames on ``endpoint`` pass through shared memory (``mode``: auto, on, off).

    TransportError for ``on`` with an endpoint that may leave the host: receivers refuse descriptors there."""
    if mode == "on" and not same_host(endpoint):
        raise TransportError(f"sockets.shared_memory = 'on' needs a same-host frame link (ipc:// or inproc://), "
                             f"not {endpoint}; use 'auto' or 'off'")
    return mode != "off" and same_host(endpoint)


class FrameSender(ABC):
    """Ingest's end of the frame link."""

    @abstractmethod
    def send(self, frame: CubeFrame) -> bool:
        """Send ``frame`` without blocking (stamps its ``ingest_out`` hop); False when it was dropped
        because the link is full or nobody listens."""

    @abstractmethod
    def close(self) -> None:
        """Release what the sender owns (its shared-memory rings)."""


class FrameReceiver(ABC):
    """The worker's end of the frame link; ``fileno`` or the socket is what a ``PollLoop`` waits on."""

    @property
    @abstractmethod
    def pollable(self) -> Any:
        """The zmq socket or object with ``fileno()`` that is readable when frames wait."""

    @abstractmethod
    def receive(self) -> list[CubeFrame]:
        """Every valid frame waiting, oldest first, each stamped ``worker_in``; bad ones are counted, never raised."""

    @abstractmethod
    def intact(self, frame: CubeFrame) -> bool:
        """Whether ``frame``'s cube is still what was received (a shared-memory slot may have been reused)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the receiver holds (mapped rings, leases). Drop every frame it returned first."""


class FrameLink(ABC):
    """Makes the two ends of one frame link."""

    @abstractmethod
    def sender(self, stats: ProcessStats) -> FrameSender:
        """Ingest's end; counts what it drops in ``stats``."""

    @abstractmethod
    def receiver(self, stats: ProcessStats, streams: Iterable[str] | None = None) -> FrameReceiver:
        """The worker's end; counts what it receives and rejects in ``stats``. ``streams``: only these
        streams' frames are wanted (others may still arrive; the worker refuses them)."""


class ResultSink(ABC):
    """The worker's end of the results link: results and the prompt events between them, in order."""

    @abstractmethod
    def send(self, result: SegmentationResult | PromptEvent) -> bool:
        """Send without blocking; False when the receiver is absent or behind (the result is dropped)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the sink owns."""


# -- shared pieces of every sender and receiver ----------------------------------------------------

class _Sender(FrameSender):
    """Encodes frames (cube into shared memory when ``slots`` is set) and hands the parts to ``carry``."""

    def __init__(self, carry: Callable[[list[Any]], bool], stats: ProcessStats, slots: int | None) -> None:
        self._carry, self._stats, self._slots = carry, stats, slots
        self._writers: dict[str, ShmWriter] = {}

    def send(self, frame: CubeFrame) -> bool:
        ref = None
        if self._slots is not None:
            writer = self._writers.get(frame.stream_id)
            if writer is None:
                writer = self._writers[frame.stream_id] = ShmWriter(frame.stream_id, self._slots)
            overrides = writer.lease_overrides
            ref = writer.put(frame.cube).to_header()
            if writer.lease_overrides != overrides:
                self._stats.count("shm_lease_overrides")  # every slot was held by a reader: one was overwritten
        stamp(frame.hops, "ingest_out")
        return self._carry([topic("frame", frame.stream_id), *frame.to_parts(ref)])

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _Receiver(FrameReceiver):
    """Decodes messages ``[topic, header, arrays...]`` from ``fetch``; maps ``cube_ref`` when ``shm`` is given."""

    def __init__(self, pollable: Any, fetch: Callable[[], Iterable[list[Any]]], stats: ProcessStats,
                 shm: ShmReader | None, refusal: str) -> None:
        self._pollable, self._fetch, self._stats, self._shm, self._refusal = pollable, fetch, stats, shm, refusal

    @property
    def pollable(self) -> Any:
        return self._pollable

    def _resolve(self, data: Any) -> np.ndarray:
        if self._shm is None:
            raise ProtocolError(f"frame: cube_ref (a shared-memory descriptor) refused: {self._refusal}")
        return self._shm.view(ShmRef.from_header(data))

    def decode(self, parts: list[Any]) -> CubeFrame:
        """One message -> frame (its shared-memory slot leased); ProtocolError or SlotLapped otherwise."""
        if len(parts) < 2:
            raise ProtocolError(f"frame: {len(parts)} part(s); expected a topic, a header and the arrays")
        frame = CubeFrame.from_parts(parts[1:], self._resolve)
        if frame.cube_ref is not None and self._shm is not None:
            self._shm.hold(ShmRef.from_header(frame.cube_ref))
        return frame

    def receive(self) -> list[CubeFrame]:
        frames: list[CubeFrame] = []
        for parts in self._fetch():
            received = now_ns()  # before decoding, so the frame link's hop is transport alone
            self._stats.count("frames_received")
            try:
                frame = self.decode(parts)
            except SlotLapped as exc:
                self._stats.count("frames_lapped")
                log.debug("%s", exc)
                continue
            except ProtocolError as exc:
                self._stats.error("frames_rejected", str(exc))
                continue
            except Exception:  # a decoder bug must cost one message, not the rest of the batch
                self._stats.count("frames_rejected")
                self._stats.count("frame_decoder_faults")
                log.exception("decoding a frame failed unexpectedly; the message is dropped")
                continue
            frame.hops.append(["worker_in", received])
            frames.append(frame)
        return frames

    def intact(self, frame: CubeFrame) -> bool:
        if frame.cube_ref is None:
            return True
        if self._shm is None:
            return False
        try:
            return self._shm.valid(ShmRef.from_header(frame.cube_ref))
        except ProtocolError:
            return False

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()


# -- sockets --------------------------------------------------------------------------------------

class SocketFrameLink(FrameLink):
    """PUB -> SUB on ``endpoint`` (default ``endpoints.frames``); cubes through shared memory when ``shared_memory``."""

    def __init__(self, sockets: SocketFactory, endpoint: str | None = None, shared_memory: bool = False,
                 slots: int = 4, sources: list[str] | None = None) -> None:
        self.sockets = sockets
        self.endpoint = endpoint or sockets.settings.endpoints.frames
        self.sources = list(sources or [self.endpoint])  # where a receiver connects: one endpoint per camera
        remote = [e for e in (self.endpoint, *self.sources) if not same_host(e)]
        if shared_memory and remote:
            raise TransportError(f"shared memory needs a same-host frame link (ipc:// or inproc://), "
                                 f"not {remote[0]}")
        self.shared_memory, self.slots = shared_memory, slots

    def sender(self, stats: ProcessStats) -> FrameSender:
        sock = self.sockets.socket("frames_out", self.endpoint)
        stats.info["shared_memory"] = self.shared_memory
        return _Sender(lambda parts: send_nowait(sock, parts), stats, self.slots if self.shared_memory else None)

    def receiver(self, stats: ProcessStats, streams: Iterable[str] | None = None) -> FrameReceiver:
        """The receiving end; with ``streams``, subscribed to those streams' frames only."""
        topics = [topic("frame", s) for s in streams] if streams else [b"frame/"]
        sock = self.sockets.socket("frames_in", self.sources[0], subscribe=topics[0])
        for extra in topics[1:]:
            sock.setsockopt(zmq.SUBSCRIBE, extra)
        for source in self.sources[1:]:  # one SUB takes every camera's frames (fair-queued)
            sock.connect(source)
        remote = [e for e in self.sources if not same_host(e)]
        return _Receiver(sock, lambda: drain(sock), stats, None if remote else ShmReader(),
                         f"{remote[0] if remote else ''} is a link that may leave this host")


def frame_link(settings: Settings, sockets: SocketFactory) -> FrameLink:
    """The frame link the settings describe: the one place that decides sockets vs shared memory."""
    endpoint = settings.endpoints.frames
    sources = settings.endpoints.frames_in()
    shared = all([uses_shared_memory(settings.sockets.shared_memory, e) for e in (endpoint, *sources)])
    return SocketFrameLink(sockets, endpoint, shared, settings.sockets.shm_slots, sources)


class SocketResultSink(ResultSink):
    """PUSH to the publisher (role ``results_out``)."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def send(self, result: SegmentationResult | PromptEvent) -> bool:
        return send_nowait(self.sock, result.to_parts())

    def close(self) -> None:
        """Nothing: the socket belongs to its SocketFactory."""


# -- in-process (tests) ---------------------------------------------------------------------------

class InProcessLink(FrameLink):
    """A frame link between threads of one process: a mailbox of ``capacity`` messages (the high-water
    mark; a full link drops the frame being sent), optionally with cubes through shared memory."""

    def __init__(self, capacity: int = 2, shared_memory: bool = False, slots: int = 4) -> None:
        self.mailbox: Mailbox[list[Any]] = Mailbox(capacity)
        self.shared_memory, self.slots = shared_memory, slots

    def put(self, parts: list[Any]) -> bool:
        """Hand a raw message (``[topic, header, arrays...]``) to the receiver, as a socket would: without
        copying, and read-only on the receiving side."""
        return self.mailbox.put([p.toreadonly() if isinstance(p, memoryview) else p for p in parts])

    def sender(self, stats: ProcessStats) -> FrameSender:
        return _Sender(self.put, stats, self.slots if self.shared_memory else None)

    def receiver(self, stats: ProcessStats, streams: Iterable[str] | None = None) -> FrameReceiver:
        return _Receiver(self.mailbox, self.mailbox.take_all, stats, ShmReader(), "in-process link")

    def close(self) -> None:
        self.mailbox.close()


class InProcessResultSink(ResultSink):
    """Keeps up to ``capacity`` results for a test to ``take``; a full sink drops (False), as a full socket does."""

    def __init__(self, capacity: int = 64) -> None:
        self.mailbox: Mailbox[SegmentationResult | PromptEvent] = Mailbox(capacity)

    def send(self, result: SegmentationResult | PromptEvent) -> bool:
        return self.mailbox.put(result)

    def take_all(self) -> list[SegmentationResult | PromptEvent]:
        return self.mailbox.take_all()

    def close(self) -> None:
        self.mailbox.close()
