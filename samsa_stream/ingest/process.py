"""The ingest process: read a source, normalize each capture, publish the frame.

Reading and normalizing run on a daemon thread (``CaptureReader``), so the loop answers a stop
within a poll interval even while a large capture is being read; on stop it returns without
waiting for a reader that is still blocked in the source. At the ``fixed`` pace the reader reads
when the tick comes (a camera captures at the tick, and the frame is not held back a period);
replays (``recorded``, ``fast``) are read one capture ahead.

The frame link is PUB (``transport.FrameLink``): a worker that is down or busy never blocks the
camera; frames it cannot take are dropped at the high-water mark and the worker counts the gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import supervision
from ..errors import ProtocolError
from ..protocol import CubeFrame, now_ns
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import FrameLink, Mailbox, PollLoop, SocketFactory, frame_link
from .capture import Capture, SourceError
from .normalize import Normalizer
from .sources import Source, make_source

log = logging.getLogger(__name__)

READER_JOIN_S = 0.5  # how long a stopping ingest waits for its reader thread before leaving it behind


WATCHDOG_STEP_S = 1.0  # the longest a pacing wait goes without a watchdog ping


class Pacer:
    """Waits between frames: ``fixed`` at fps, ``recorded`` by the capture timestamps, ``fast`` not at all."""

    def __init__(self, mode: str, fps: float, stop: threading.Event) -> None:
        self.mode, self.period, self.stop = mode, 1.0 / fps, stop
        self._start: float | None = None
        self._first_ts: int | None = None
        self._count = 0

    def wait(self, timestamp_ns: int | None) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start, self._first_ts = now, timestamp_ns
        if self.mode == "fast":
            due = now
        elif self.mode == "recorded" and timestamp_ns is not None and self._first_ts is not None:
            due = self._start + (timestamp_ns - self._first_ts) / 1e9
        else:
            due = self._start + self._count * self.period
        self._count += 1
        while due > now and not self.stop.is_set():
            # A long wait (a low fps, a gap in a recorded capture) still keeps systemd's watchdog fed.
            self.stop.wait(min(due - now, WATCHDOG_STEP_S))
            supervision.current().watchdog()
            now = time.monotonic()
        if now - due > 1.0 and self.mode != "fast":
            self._start, self._count, self._first_ts = now, 1, timestamp_ns  # fell far behind: restart the clock


@dataclass
class Normalized:
    """A capture ready to send, with the timestamp the ``recorded`` pace waits for."""

    frame: CubeFrame
    timestamp_ns: int | None
    read_ns: int  # when the source handed it over: the capture time of a camera read at the tick


@dataclass
class SourceEnded:
    """The source has no more captures (``failure``: it raised instead of ending)."""

    failure: BaseException | None = None


ReaderItem = Normalized | SourceError | ProtocolError | SourceEnded


class CaptureReader:
    """Reads and normalizes captures on a daemon thread, at most one ahead of the sender.

    ``fileno()`` is readable while a result waits, so a ``PollLoop`` can wait on it; ``take``
    returns a ``Normalized`` frame, the SourceError/ProtocolError of a capture that cannot be
    used, or ``SourceEnded``. Frame ids count the frames that normalized, from 0. With
    ``on_request`` the reader reads each capture only after ``request()``, so a camera is read
    when the sender's tick comes rather than a frame period early."""

    def __init__(self, source: Source, normalize: Callable[[Capture, int], CubeFrame],
                 on_request: bool = False) -> None:
        self._source, self._normalize = source, normalize
        self._mailbox: Mailbox[ReaderItem] = Mailbox(1)
        self._halt = threading.Event()
        self._requests: threading.Semaphore | None = threading.Semaphore(0) if on_request else None
        self._thread = threading.Thread(target=self._run, name="capture-reader", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Let an ``on_request`` reader read the next capture (no effect on a read-ahead reader)."""
        if self._requests is not None:
            self._requests.release()

    def _requested(self) -> bool:
        """Wait for the next request; False once the reader is halted."""
        while self._requests is not None and not self._halt.is_set():
            if self._requests.acquire(timeout=0.1):
                return True
        return not self._halt.is_set()

    def fileno(self) -> int:
        return self._mailbox.fileno()

    def take(self) -> ReaderItem | None:
        return self._mailbox.take()

    def _run(self) -> None:
        frame_id = 0
        try:
            captures = iter(self._source.captures())
            while self._requested():
                capture = next(captures, None)
                read_ns = now_ns()  # the source handed the capture over: normalization counts, the read does not
                if capture is None:
                    break
                if self._halt.is_set():
                    return
                item: ReaderItem
                if isinstance(capture, SourceError):  # a bad file in a recording: reported, the source goes on
                    item = capture
                else:
                    try:
                        item = Normalized(self._normalize(capture, frame_id), capture.timestamp_ns, read_ns)
                        frame_id += 1
                    except (SourceError, ProtocolError) as exc:
                        item = exc
                if not self._mailbox.put_wait(item, self._halt):
                    return
            if not self._halt.is_set():
                self._mailbox.put_wait(SourceEnded(), self._halt)
        except Exception as exc:  # the source broke: the sender logs it and ends the process (systemd restarts it)
            self._mailbox.put_wait(SourceEnded(exc), self._halt)
        finally:
            if self._halt.is_set():
                self._mailbox.close()  # the loop has let go of it; a reader that outlived close() closes it

    def close(self) -> bool:
        """Stop reading; True if the reader thread ended within ``READER_JOIN_S`` (else it is left behind,
        blocked in the source, and ends with the process)."""
        self._halt.set()
        self._thread.join(READER_JOIN_S)
        if self._thread.is_alive():
            return False
        self._mailbox.close()
        return True


def run_ingest(settings: Settings, stop: threading.Event, stats_file: Path | None = None,
               source: Source | None = None, link: FrameLink | None = None) -> ProcessStats:
    """Publish frames until the source ends, ``ingest.frames`` are sent, or ``stop`` is set.

    ``link`` replaces the frame link the settings describe (a test's ``transport.InProcessLink``)."""
    cfg = settings.ingest
    stats = ProcessStats("ingest", settings.log.stats_interval_s)
    source = source or make_source(cfg, stop)
    stats.info["source"] = source.describe()
    normalizer = Normalizer(cfg)
    pacer = Pacer(cfg.pace, cfg.fps, stop)
    log.info("ingest up: %s -> %s (stream %s)", source.describe(),
             "in-process link" if link else settings.endpoints.frames, cfg.stream_id)
    ended = threading.Event()
    failures: list[BaseException] = []
    with SocketFactory(settings) as sockets:
        sender = (link or frame_link(settings, sockets)).sender(stats)
        at_tick = cfg.pace == "fixed"
        reader = CaptureReader(source, lambda capture, frame_id: normalizer(capture, cfg.stream_id, frame_id, 0),
                               on_request=at_tick)

        def next_tick() -> None:
            if at_tick:
                pacer.wait(None)  # a camera captures at the tick: ask for the next capture then
                reader.request()

        def send_next() -> None:
            item = reader.take()
            if item is None:
                return
            send(item)
            if not ended.is_set():
                next_tick()

        def send(item: ReaderItem) -> None:
            if isinstance(item, SourceEnded):
                ended.set()
                if item.failure is not None:
                    failures.append(item.failure)  # raised once the links are closed
                    return
                log.info("source ended after %d frame(s)", stats.counters["frames_captured"])
                return
            if isinstance(item, (SourceError, ProtocolError)):
                stats.error("captures_rejected", str(item))
                return
            if not at_tick:
                pacer.wait(item.timestamp_ns)  # a replay goes out at its recorded (or fastest) pace
            if stop.is_set():
                return
            frame = item.frame
            # At the tick the capture time is when the camera delivered it; a replay is captured when sent.
            frame.capture_ns = item.read_ns if at_tick else now_ns()
            stats.count("nonfinite_replaced", frame.source.get("nonfinite_replaced", 0))
            try:
                sent = sender.send(frame)
            except ProtocolError as exc:
                stats.error("captures_rejected", str(exc))
                return
            stats.count("frames_captured")
            stats.count("frames_sent" if sent else "frames_send_dropped")
            if cfg.frames and stats.counters["frames_captured"] >= cfg.frames:
                ended.set()

        loop = PollLoop(stop, settings.sockets.poll_ms, stats)
        loop.add(reader, send_next)
        supervision.current().ready(f"source open: {source.describe()}")
        next_tick()
        try:
            loop.run(ended.is_set)
        finally:
            if not reader.close():
                log.warning("the source is still busy reading; leaving its reader thread behind")
            try:
                source.close()
            except Exception:  # closing a camera that is mid-read must not hide the stop
                log.exception("closing the source failed")
            sender.close()
    stats.write(stats_file)
    log.info("ingest stopped: %s", dict(stats.counters))
    if failures:
        raise failures[0]  # a source that breaks is a programming error: it keeps its traceback
    return stats
