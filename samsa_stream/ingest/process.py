"""The ingest process: read a source, normalize each capture, publish the frame.

The frame link is PUB: a worker that is down or busy never blocks the camera; frames it
cannot take are dropped at the high-water mark and the worker counts the gap.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..protocol import ProtocolError, now_ns, stamp, topic
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import ShmWriter, SocketFactory, send_nowait, uses_shared_memory
from .normalize import Normalizer
from .sources import Source, SourceError, make_source

log = logging.getLogger(__name__)


class Pacer:
    """Waits between frames: ``fixed`` at fps, ``recorded`` by the capture timestamps, ``fast`` not at all."""

    def __init__(self, mode: str, fps: float, stop: threading.Event) -> None:
        self.mode, self.period, self.stop = mode, 1.0 / fps, stop
        self.by_timestamps = mode == "recorded"  # then it needs the capture (its timestamp) before waiting
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
        if due > now:
            self.stop.wait(due - now)
        elif now - due > 1.0 and self.mode != "fast":
            self._start, self._count, self._first_ts = now, 1, timestamp_ns  # fell far behind: restart the clock


def run_ingest(settings: Settings, stop: threading.Event, stats_file: Path | None = None,
               source: Source | None = None) -> ProcessStats:
    """Publish frames until the source ends, ``ingest.frames`` are sent, or ``stop`` is set."""
    cfg = settings.ingest
    stats = ProcessStats("ingest", settings.log.stats_interval_s)
    source = source or make_source(cfg, stop)
    stats.info["source"] = source.describe()
    normalizer = Normalizer(cfg)
    pacer = Pacer(cfg.pace, cfg.fps, stop)
    frame_topic = topic("frame", cfg.stream_id)
    log.info("ingest up: %s -> %s (stream %s)", source.describe(), settings.endpoints.frames, cfg.stream_id)
    shm = ShmWriter(cfg.stream_id, settings.sockets.shm_slots) \
        if uses_shared_memory(settings.sockets.shared_memory, settings.endpoints.frames) else None
    stats.info["shared_memory"] = shm is not None
    with SocketFactory(settings) as sockets:
        pub = sockets.socket("frames_out")
        frame_id = 0
        captures = source.captures()
        try:
            while not stop.is_set() and (cfg.frames == 0 or frame_id < cfg.frames):
                if not pacer.by_timestamps:
                    pacer.wait(None)  # a camera captures at the tick, not a frame period early
                capture = next(captures, None)
                if capture is None:
                    log.info("source ended after %d frame(s)", frame_id)
                    break
                if isinstance(capture, SourceError):  # a bad file in a recording: skip it, keep going
                    stats.error("captures_rejected", str(capture))
                    continue
                if pacer.by_timestamps:
                    pacer.wait(capture.timestamp_ns)
                try:
                    frame = normalizer(capture, cfg.stream_id, frame_id, now_ns())
                    stats.count("nonfinite_replaced", frame.source.get("nonfinite_replaced", 0))
                    ref = None if shm is None else shm.put(frame.cube).to_header()
                    stamp(frame.hops, "ingest_out")
                    parts = frame.to_parts(ref)
                except (SourceError, ProtocolError) as exc:
                    stats.error("captures_rejected", str(exc))
                    continue
                stats.count("frames_captured")
                if send_nowait(pub, [frame_topic, *parts]):
                    stats.count("frames_sent")
                else:
                    stats.count("frames_send_dropped")
                frame_id += 1
                stats.maybe_log()
        finally:
            source.close()
            if shm is not None:
                shm.close()
    stats.write(stats_file)
    log.info("ingest stopped: %s", dict(stats.counters))
    return stats
