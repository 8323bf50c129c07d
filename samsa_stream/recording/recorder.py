"""The recorder: subscribes to a running node and writes what it sees into a recording (docs/recording.md).

It never slows the live path. It is a process of its own, a subscriber like any display: the
ingest's PUB socket and the publisher's XPUB drop what a slow recorder does not take (at the
recorder's own high-water mark), and a shared-memory cube the recorder reads too late is
counted as lapped. Inside, the receive loop (the caller's thread) copies each frame's cube out
of shared memory at once and hands every message to a bounded ``Backlog``; the writer thread
encodes and writes them. When the backlog is full the message is dropped and counted
(``frames_dropped``, ``masks_dropped``, ...), so a stalled disk costs recorded messages, never
the receive loop.

Counters (the stats file and the ``/recorder/stats`` channel): per kind ``*_recorded`` and
``*_dropped``; ``frames_missed`` (frame-id gaps: frames this recorder never got, lapped ones
included), ``frames_lapped``, ``frames_overwritten`` (the cube changed while being copied),
``frames_skipped`` (``cube_every``); the subscriber's ``masks_missed`` (sequence gaps),
``replays_ignored``, ``messages_rejected``; ``files_written``, ``bytes_written``.
"""

from __future__ import annotations

import json
import logging
import socket as socketlib
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .. import __version__, supervision
from ..display.subscriber import Subscriber
from ..errors import CommandError, ProtocolError
from ..protocol import CubeFrame, OverlayImage, check_stream_id, now_ns
from ..protocol.messages import count_nonfinite
from ..runtime import ProcessStats
from ..settings import RecordSettings, Settings
from ..transport import FrameLink, PollLoop, SocketFactory, drain, frame_link
from .format import FORMAT_VERSION, overlay_data, wire_data
from .writer import RECORDED, Opener, RecordingWriter, WriterOptions, exclusive_open, part_path

log = logging.getLogger(__name__)

DEFAULT_QUEUE_BYTES = RecordSettings().queue_bytes  # four 100-band 480 x 640 float32 frames
DEFAULT_QUEUE_MESSAGES = RecordSettings().queue_messages  # masks, overlays, stream infos, prompt events
BROADCAST_KINDS = ("mask", "overlay", "stream", "prompt")
_RECORDED_KIND = {"mask": "masks", "overlay": "overlay", "stream": "stream", "prompt": "prompt"}
_JOIN_LOG_S = 5.0  # how often a stop that waits for the disk says so


@dataclass(frozen=True)
class RecordOptions:
    """What ``samsa-stream record`` was asked to do; CommandError for a value that cannot work."""

    out: Path
    writer: WriterOptions = WriterOptions()
    duration_s: float = 0.0  # 0: until stopped
    streams: tuple[str, ...] | None = None  # None: every stream
    cube_every: int = 1  # record every Nth frame of a stream (1: all)
    cube_dtype: Literal["float32", "float16"] | None = None  # None: as the node sends it
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    queue_messages: int = DEFAULT_QUEUE_MESSAGES

    def __post_init__(self) -> None:
        if self.duration_s < 0:
            raise CommandError(f"duration must be >= 0 seconds (0 = until stopped), got {self.duration_s}")
        if self.cube_every < 1:
            raise CommandError(f"cube-every must be >= 1, got {self.cube_every}")
        if self.cube_dtype not in (None, "float32", "float16"):
            raise CommandError(f"cube dtype must be float32 or float16, got {self.cube_dtype!r}")
        if self.queue_bytes < 1 or self.queue_messages < 1:
            raise CommandError("the recorder's queue must hold at least one byte of cubes and one message")
        if self.streams is not None:
            if not self.streams:
                raise CommandError("name at least one stream to record (or none for every stream)")
            try:
                for stream in self.streams:
                    check_stream_id(stream)
            except ProtocolError as exc:
                raise CommandError(str(exc)) from None

    def check_out(self) -> None:
        """CommandError unless the recording can be created: its folder exists and its file does not."""
        if not self.out.parent.is_dir():
            raise CommandError(f"--out {self.out}: folder {self.out.parent} does not exist")
        if self.out.exists() or part_path(self.out, 1).exists():
            raise CommandError(f"{self.out} (or its continuation {part_path(self.out, 1).name}) exists; a recording "
                               f"never overwrites a file (choose another --out)")

    def summary(self) -> dict[str, Any]:
        w = self.writer
        return {"compression": w.compression, "chunk_bytes": w.chunk_bytes, "max_bytes": w.max_bytes,
                "max_seconds": w.max_seconds, "fsync": w.fsync, "duration_s": self.duration_s,
                "streams": list(self.streams) if self.streams else None, "cube_every": self.cube_every,
                "cube_dtype": self.cube_dtype, "queue_bytes": self.queue_bytes, "queue_messages": self.queue_messages}


@dataclass
class Entry:
    """One message on its way to the writer: a recorded ``kind`` (format.KINDS), or ``stats`` / ``end``."""

    kind: str
    stream_id: str = ""
    payload: Any = None  # CubeFrame (frame), OverlayImage (overlay), wire parts (others), counters (stats, end)
    publish_ns: int = 0
    log_ns: int = 0
    nbytes: int = 0


class Backlog:
    """The bounded hand-over from the receive loop to the writer thread.

    Frames are held up to ``max_bytes`` of message data (one frame always fits an empty backlog),
    other messages up to ``max_messages``; ``put`` refuses (False) what does not fit and never
    blocks. ``put_control`` (stats, end) always succeeds."""

    def __init__(self, max_bytes: int, max_messages: int) -> None:
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self._entries: deque[Entry] = deque()
        self._cond = threading.Condition()
        self.frame_bytes = 0
        self.messages = 0

    def fits(self, kind: str, nbytes: int) -> bool:
        if kind == "frame":
            return self.frame_bytes == 0 or self.frame_bytes + nbytes <= self.max_bytes
        return self.messages < self.max_messages

    def put(self, entry: Entry) -> bool:
        with self._cond:
            if not self.fits(entry.kind, entry.nbytes):
                return False
            self._account(entry, +1)
            self._entries.append(entry)
            self._cond.notify()
        return True

    def put_control(self, entry: Entry) -> None:
        with self._cond:
            self._entries.append(entry)
            self._cond.notify()

    def take(self, timeout_s: float | None = None) -> Entry | None:
        """The oldest entry, waiting up to ``timeout_s`` (None: for ever); None when none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._entries), timeout_s):
                return None
            entry = self._entries.popleft()
            self._account(entry, -1)
            return entry

    def _account(self, entry: Entry, sign: int) -> None:
        if entry.kind == "frame":
            self.frame_bytes += sign * entry.nbytes
        elif entry.kind not in ("stats", "end"):
            self.messages += sign

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)


def session_metadata(settings: Settings, options: RecordOptions, started_ns: int | None = None) -> dict[str, str]:
    """The metadata record of every file: format and software version, start time, host, settings summary."""
    started = now_ns() if started_ns is None else started_ns
    node = {"endpoints": settings.endpoints.model_dump(mode="json"),
            "ingest": {"source": settings.ingest.source, "stream_id": settings.ingest.stream_id,
                       "fps": settings.ingest.fps, "dtype": settings.ingest.dtype},
            "worker": {"engine": settings.worker.engine},
            "publisher": {"overlay_format": settings.publisher.overlay_format,
                          "overlay_every": settings.publisher.overlay_every}}
    return {"format_version": str(FORMAT_VERSION), "samsa_stream_version": __version__,
            "session": options.out.name, "started_ns": str(started),
            "started": datetime.fromtimestamp(started / 1e9, UTC).isoformat(timespec="milliseconds"),
            "hostname": socketlib.gethostname(), "settings": json.dumps(node, sort_keys=True),
            "recorder": json.dumps(options.summary(), sort_keys=True)}


def _frame_bytes(frame: CubeFrame, dtype: np.dtype) -> int:
    labels = 0 if frame.labels is None else frame.labels.size * 4
    return frame.cube.size * dtype.itemsize + frame.rgb.nbytes + frame.wavelengths_nm.size * 8 + labels


def encode(entry: Entry) -> bytes:
    """An entry's message as the recording stores it (format.py)."""
    if entry.kind == "frame":
        return wire_data(entry.payload.to_parts())
    if entry.kind == "overlay":
        return overlay_data(entry.payload)
    return wire_data(entry.payload)


class Recorder:
    """Receives from the node the settings describe and writes ``options.out``.

    ``start()`` starts the writer thread; ``poll()`` serves what arrived (the receive loop's one
    pass); ``run(stop)`` does both until ``stop``, the duration or a write error; ``close()`` writes
    what is queued, finishes the file and closes the sockets. A test passes ``link`` (an in-process
    frame link), ``sockets`` (a SocketFactory sharing its zmq context) or ``opener`` (how each file is
    created: one whose writes block stands in for a stalled disk)."""

    def __init__(self, settings: Settings, options: RecordOptions, stats: ProcessStats | None = None, *,
                 link: FrameLink | None = None, sockets: SocketFactory | None = None,
                 opener: Opener = exclusive_open) -> None:
        options.check_out()
        self.settings, self.options, self.opener = settings, options, opener
        self.stats = stats or ProcessStats("record", settings.log.stats_interval_s)
        self.backlog = Backlog(options.queue_bytes, options.queue_messages)
        self.metadata = session_metadata(settings, options)
        self.failure: BaseException | None = None  # what stopped the writer thread, if anything did
        self.paths: list[Path] = []  # the files begun (final once close() returned)
        self.final: dict[str, int] = {}  # the counters of the last /recorder/stats message
        self._own_sockets = sockets is None
        self._sockets = sockets or SocketFactory(settings)
        self._streams = None if options.streams is None else frozenset(options.streams)
        self._cube_dtype = None if options.cube_dtype is None else np.dtype(options.cube_dtype)
        self._last_frame: dict[str, int] = {}
        self._seen: Counter[str] = Counter()
        self._last_log_ns = 0
        self._next_stats = time.monotonic() + settings.log.stats_interval_s
        self._thread = threading.Thread(target=self._write_all, name="recorder-writer", daemon=True)
        self._writer_counters: dict[str, int] = {}
        try:
            self.frames = (link or frame_link(settings, self._sockets)).receiver(self.stats)
            self.subscriber = Subscriber(settings, options.streams, kinds=BROADCAST_KINDS, sockets=self._sockets,
                                         stats=self.stats)
        except BaseException:
            if self._own_sockets:
                self._sockets.close()
            raise
        self._loop = PollLoop(threading.Event(), settings.sockets.poll_ms, self.stats)
        self._loop.add(self.frames.pollable, self._take_frames)
        self._loop.add(self.subscriber.socket, self._take_broadcasts)

    # -- the receive loop (the caller's thread) ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def poll(self, timeout_ms: int | None = None) -> None:
        """Wait up to ``timeout_ms`` (default ``sockets.poll_ms``) and take every frame and broadcast waiting."""
        self._loop.run_once(timeout_ms)
        if time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + self.settings.log.stats_interval_s
            self.backlog.put_control(Entry("stats", payload=dict(self.stats.counters),
                                           log_ns=self._log_time(now_ns())))
        self.stats.maybe_log()

    def run(self, stop: threading.Event) -> None:
        """Start, then receive until ``stop`` is set, ``options.duration_s`` has passed or writing failed."""
        self.start()
        end = time.monotonic() + self.options.duration_s if self.options.duration_s else None
        while not stop.is_set() and self._thread.is_alive() and (end is None or time.monotonic() < end):
            self.poll()

    @property
    def last_frame_ids(self) -> dict[str, int]:
        """The newest frame id received per stream."""
        return dict(self._last_frame)

    def _log_time(self, received_ns: int) -> int:
        self._last_log_ns = max(int(received_ns), self._last_log_ns + 1)
        return self._last_log_ns

    def _take_frames(self) -> None:
        for frame in self.frames.receive():
            received = frame.hops.pop()[1] if frame.hops and frame.hops[-1][0] == "worker_in" else now_ns()
            self._take_frame(frame, received)

    def _take_frame(self, frame: CubeFrame, received_ns: int) -> None:
        stats, stream = self.stats, frame.stream_id
        if self._streams is not None and stream not in self._streams:
            stats.count("frames_other_streams")
            return
        last = self._last_frame.get(stream)
        if last is not None and frame.frame_id > last + 1:
            stats.count("frames_missed", frame.frame_id - last - 1)  # lost at this recorder's socket, or lapped
        elif last is not None and frame.frame_id <= last:
            stats.count("frame_id_restarts")  # the ingest restarted and counts from 0 again
        self._last_frame[stream] = frame.frame_id
        seen = self._seen[stream]
        self._seen[stream] += 1
        if seen % self.options.cube_every:
            stats.count("frames_skipped")
            return
        dtype = self._cube_dtype or frame.cube.dtype
        nbytes = _frame_bytes(frame, dtype)
        if not self.backlog.fits("frame", nbytes):
            stats.count("frames_dropped")  # before the copy: a full backlog costs nothing more
            return
        cube = frame.cube.astype(dtype, copy=True)  # out of shared memory now: the slot is reused soon
        if dtype != frame.cube.dtype and count_nonfinite(cube):
            cube = frame.cube.copy()  # values past float16's range: kept as sent rather than as inf
            stats.count("frames_kept_float32")
        if not self.frames.intact(frame):
            stats.count("frames_overwritten")  # the slot was rewritten while it was copied
            return
        kept = replace(frame, cube=cube, cube_ref=None)
        if self.backlog.put(Entry("frame", stream, kept, frame.capture_ns, self._log_time(received_ns), nbytes)):
            stats.count("frames_queued")
        else:
            stats.count("frames_dropped")

    def _take_broadcasts(self) -> None:
        for parts in drain(self.subscriber.socket):
            update = self.subscriber.handle(parts)
            if update is None:
                continue  # a replay or a rejected message: the subscriber counted it
            kind = _RECORDED_KIND[update.kind]
            if update.event is not None:
                payload: Any = parts[1:]
                publish = update.event.handled_ns
            elif update.kind == "overlay" and update.overlay is not None:
                payload, publish = update.overlay, update.overlay.capture_ns
            else:
                message = update.masks or update.info
                payload, publish = parts[1:], (message.capture_ns if message is not None else 0)
            nbytes = len(payload.data) if isinstance(payload, OverlayImage) else sum(len(p) for p in payload)
            entry = Entry(kind, update.stream_id, payload, publish, self._log_time(update.received_ns), nbytes)
            if not self.backlog.put(entry):
                self.stats.count(f"{RECORDED[kind]}_dropped")

    # -- the writer thread -------------------------------------------------------------------------

    def _write_all(self) -> None:
        writer: RecordingWriter | None = None
        try:
            writer = RecordingWriter(self.options.out, self.options.writer, self.metadata, self.opener)
            self.paths = writer.paths
            while True:
                entry = self.backlog.take()
                if entry is None:
                    continue
                if entry.kind == "end":
                    self.final = writer.close(entry.payload)
                    return
                if entry.kind == "stats":
                    writer.write_stats(entry.payload, entry.log_ns)
                    continue
                try:
                    data = encode(entry)
                except Exception:  # one message that cannot be encoded costs that message only
                    writer.counters["messages_unencodable"] += 1
                    log.exception("a %s message of %s could not be encoded; it is not recorded", entry.kind,
                                  entry.stream_id)
                    continue
                writer.write(entry.kind, entry.stream_id, data, entry.publish_ns, entry.log_ns)
        except BaseException as exc:  # a full disk, a vanished folder: the recording ends, the file stays readable
            self.failure = exc
            log.error("writing the recording %s failed: %s", self.options.out, exc)
            if writer is not None:
                self.final = writer.counters_for_stats()
                writer.abandon()

    def close(self) -> dict[str, int]:
        """Write what is queued, finish the file, close the sockets; returns the final counters (also merged
        into ``stats``). Waits for the disk as long as it takes (a stalled disk keeps the process alive)."""
        if self._thread.is_alive():
            self.backlog.put_control(Entry("end", payload=dict(self.stats.counters)))
            if len(self.backlog) > 1:
                log.info("writing %d queued message(s) before stopping", len(self.backlog) - 1)
            while self._thread.is_alive():
                self._thread.join(_JOIN_LOG_S)
                if self._thread.is_alive():
                    log.warning("still writing %d queued message(s) to %s", len(self.backlog), self.options.out)
        self.subscriber.close()
        self.frames.close()
        if self._own_sockets:
            self._sockets.close()
        for name, value in self.final.items():
            if name not in self.stats.counters:
                self.stats.counters[name] = value  # the writer's counters (recorded, bytes, files)
        self.stats.info["files"] = [str(p) for p in self.paths]
        return self.final


def run_record(settings: Settings, stop: threading.Event, stats_file: Path | None = None, *,
               options: RecordOptions, link: FrameLink | None = None, sockets: SocketFactory | None = None,
               opener: Opener = exclusive_open) -> ProcessStats:
    """Record until ``stop`` is set or ``options.duration_s`` has passed; returns the final counters.
    CommandError when writing failed (after the file was closed as far as it could be)."""
    recorder = Recorder(settings, options, link=link, sockets=sockets, opener=opener)
    log.info("recording frames<-%s broadcast<-%s streams=%s to %s (%s chunks)",
             "in-process link" if link else settings.endpoints.frames, settings.endpoints.broadcast,
             ",".join(options.streams) if options.streams else "all", options.out, options.writer.compression)
    supervision.current().ready(f"subscribed; recording to {options.out}")
    try:
        recorder.run(stop)
    finally:
        supervision.current().stopping()  # before the file is finished, which the watchdog must not time
        final = recorder.close()
        recorder.stats.write(stats_file)
    if recorder.failure is not None:
        raise CommandError(f"recording to {recorder.paths[-1] if recorder.paths else options.out} failed: "
                           f"{recorder.failure}")
    log.info("recording stopped: %s", json.dumps({k: final[k] for k in sorted(final)}))
    return recorder.stats


__all__ = ["BROADCAST_KINDS", "DEFAULT_QUEUE_BYTES", "DEFAULT_QUEUE_MESSAGES", "Backlog", "Entry", "RecordOptions",
           "Recorder", "encode", "run_record", "session_metadata"]
