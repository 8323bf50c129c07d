"""Reading a session recording (MCAP, ``format``): its messages in the order the recorder saw them,
decoded lazily, and a summary of what it holds (``samsa-stream inspect``).

A message that does not decode is counted (``unreadable``) and skipped, never raised: a recording
cut short by a crash still replays up to where it ends.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgpack
from mcap.exceptions import McapError
from mcap.reader import McapReader, NonSeekingReader, make_reader

from ..errors import CommandError, ProtocolError
from ..protocol import CubeFrame, MaskBroadcast, PromptEvent
from .format import STATS_TOPIC, decode, parse_topic, wire_parts
from .writer import part_path

SUFFIX = ".mcap"


class RecordingError(CommandError):
    """A recording that cannot be opened or read at all."""


def is_recording(path: Path) -> bool:
    """Whether ``path`` names a session recording (an .mcap file) rather than a capture."""
    return path.suffix.lower() == SUFFIX


@dataclass(frozen=True)
class Entry:
    """One recorded message, not yet decoded."""

    log_ns: int
    publish_ns: int
    topic: str
    stream: str
    kind: str
    data: bytes

    def decode(self) -> Any:
        """The message object (``format.decode``); ProtocolError when it does not hold up."""
        return decode(self.kind, self.data)

    def frame_header(self) -> dict[str, Any]:
        """A ``frame`` message's header alone (the cube is not decoded): frame_id, capture_ns, arrays."""
        header = msgpack.unpackb(wire_parts(self.data)[0], raw=False)
        if not isinstance(header, dict):
            raise ProtocolError("recorded frame header is not a map")
        return header


def has_cube(header: dict[str, Any]) -> bool:
    """Whether a recorded frame header carries its cube (a reduced cube rate records some without)."""
    arrays = header.get("arrays") or []
    return any(isinstance(a, dict) and a.get("name") == "cube" for a in arrays)


@dataclass
class Recording:
    """A recording on disk: ``path`` and the files it rolled over into (``SESSION-0001.mcap``, ...).
    ``entries()`` walks its messages in log-time order; ``unreadable`` counts what could not be read
    on the walks so far."""

    path: Path
    unreadable: Counter[str] = field(default_factory=Counter)
    paths: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.path.is_file():
            raise RecordingError(f"recording {self.path}: no such file")
        self.paths = [self.path]
        while part_path(self.path, len(self.paths)).is_file():
            self.paths.append(part_path(self.path, len(self.paths)))
        for path in self.paths:
            with path.open("rb") as f:
                if f.read(8) != b"\x89MCAP0\r\n":
                    raise RecordingError(f"{path} is not an MCAP recording (no MCAP magic at its start)")

    def _all_raw(self) -> Iterator[tuple[str, int, int, bytes]]:
        """``_raw`` over every file of the recording, in order (each file's log times follow the last's)."""
        for path in self.paths:
            with path.open("rb") as f:
                yield from self._raw(f)

    def _reader(self, f: IO[bytes]) -> McapReader:
        return make_reader(f)

    def entries(self, kinds: Iterable[str] | None = None) -> Iterator[Entry]:
        """Every message of the recorded kinds (``format.KINDS``; None: all), oldest log time first;
        the recorder's stats channel is left out (see ``stats``)."""
        wanted = None if kinds is None else set(kinds)
        for topic, log_ns, publish_ns, data in self._all_raw():
            if topic == STATS_TOPIC:
                continue
            try:
                stream, kind = parse_topic(topic)
            except ProtocolError:
                self.unreadable["foreign_channels"] += 1
                continue
            if wanted is None or kind in wanted:
                yield Entry(log_ns, publish_ns, topic, stream, kind, data)

    def _raw(self, f: IO[bytes]) -> Iterator[tuple[str, int, int, bytes]]:
        """(topic, log time, publish time, data) in log-time order; a file without its summary (the
        recorder did not close it) is read front to back, as far as it goes."""
        try:
            reader = self._reader(f)
            summary = reader.get_summary()
        except (McapError, ValueError, EOFError):
            summary = None
        if summary is None:
            f.seek(0)
            reader = NonSeekingReader(f)
        try:
            # Without a summary, file order: the recorder writes in log-time order, and sorting would read
            # the whole file before the first message (and lose it all at a torn record).
            for _schema, channel, message in reader.iter_messages(log_time_order=summary is not None):
                yield channel.topic, message.log_time, message.publish_time, message.data
        except (McapError, ValueError, EOFError) as exc:
            self.unreadable["truncated"] += 1
            self.unreadable_reason = f"{type(exc).__name__}: {exc}"

    def decoded(self, kinds: Iterable[str] | None = None) -> Iterator[tuple[Entry, Any]]:
        """``entries`` with each message decoded; those that do not decode are counted and skipped."""
        for entry in self.entries(kinds):
            try:
                yield entry, entry.decode()
            except ProtocolError:
                self.unreadable[entry.kind] += 1

    def stats(self) -> dict[str, int]:
        """The recorder's counters as last written on ``/recorder/stats`` (empty when there are none)."""
        last: dict[str, int] = {}
        for topic, _log, _pub, data in self._all_raw():
            if topic != STATS_TOPIC:
                continue
            try:
                counters = json.loads(data).get("counters", {})
            except (ValueError, AttributeError):
                self.unreadable["stats"] += 1
                continue
            if isinstance(counters, dict):
                last = {str(k): int(v) for k, v in counters.items() if isinstance(v, int)}
        return last

    def metadata(self) -> dict[str, dict[str, str]]:
        """The file's metadata records by name (``samsa-stream``: format version and the like)."""
        out: dict[str, dict[str, str]] = {}
        try:
            with self.paths[0].open("rb") as f:
                for record in self._reader(f).iter_metadata():
                    out[record.name] = dict(record.metadata)
        except (McapError, ValueError, EOFError):
            pass
        return out

    def describe(self) -> dict[str, Any]:
        """What the recording holds, as ``samsa-stream inspect`` prints it."""
        channels: Counter[str] = Counter()
        schemas: dict[str, str] = {}
        streams: dict[str, dict[str, Any]] = {}
        first: int | None = None
        last: int | None = None
        for topic, log_ns, _pub, _data in self._all_raw():
            channels[topic] += 1
            first = log_ns if first is None else min(first, log_ns)
            last = log_ns if last is None else max(last, log_ns)
        for topic in channels:
            try:
                stream, _kind = parse_topic(topic)
            except ProtocolError:
                continue
            streams.setdefault(stream, _stream_summary())
        for entry in self.entries():
            summary = streams[entry.stream]
            try:
                _count(summary, entry)
            except ProtocolError:
                self.unreadable[entry.kind] += 1
        for summary in streams.values():
            masked = summary.pop("_masked")
            cubes = summary.pop("_cubes")
            summary["frames_without_cube"] += len(masked - cubes - summary.pop("_cubeless"))
            summary["objects"] = sorted(summary["objects"])
            first_ns, last_ns = summary.pop("_capture")
            summary["capture_span_s"] = round((last_ns - first_ns) / 1e9, 3) if first_ns is not None else 0.0
        compression, sizes = self._compression()
        schema_of = self._schemas()
        schemas = {topic: schema_of.get(topic, "") for topic in channels}
        return {
            "path": str(self.path),
            "files": [str(p) for p in self.paths],
            "file_bytes": sum(p.stat().st_size for p in self.paths),
            "compression": compression,
            "chunk_bytes": sizes,
            "duration_s": round(((last or 0) - (first or 0)) / 1e9, 3),
            "messages": sum(channels.values()),
            "streams": streams,
            "recorder_stats": self.stats(),
            "channels": [{"topic": t, "schema": schemas[t], "messages": n} for t, n in sorted(channels.items())],
            "metadata": self.metadata(),
            "unreadable": dict(self.unreadable),
        }

    def _summaries(self) -> list[Any]:
        """Each file's MCAP summary (None for a file the recorder did not close)."""
        out = []
        for path in self.paths:
            try:
                with path.open("rb") as f:
                    out.append(self._reader(f).get_summary())
            except (McapError, ValueError, EOFError):
                out.append(None)
        return out

    def _compression(self) -> tuple[list[str], dict[str, int]]:
        summaries = self._summaries()
        chunks = [c for s in summaries if s is not None for c in s.chunk_indexes]
        kinds = sorted({c.compression or "none" for c in chunks})
        if any(s is None for s in summaries):
            kinds.append("unknown (a file has no summary: the recorder did not close it)")
        return kinds, {"compressed": sum(c.compressed_size for c in chunks),
                       "uncompressed": sum(c.uncompressed_size for c in chunks)}

    def _schemas(self) -> dict[str, str]:
        return {c.topic: s.schemas[c.schema_id].name if c.schema_id in s.schemas else ""
                for s in self._summaries() if s is not None for c in s.channels.values()}


def _stream_summary() -> dict[str, Any]:
    return {"frames": 0, "frames_with_cube": 0, "frames_without_cube": 0, "masks": 0, "refresh_masks": 0,
            "prompts_ok": 0, "prompts_refused": 0, "prompt_ops": Counter(), "objects": set(),
            "_masked": set(), "_cubes": set(), "_cubeless": set(), "_capture": (None, None)}


def _count(summary: dict[str, Any], entry: Entry) -> None:
    if entry.kind == "frame":
        header = entry.frame_header()
        frame_id = header.get("frame_id")
        summary["frames"] += 1
        if has_cube(header):
            summary["frames_with_cube"] += 1
            summary["_cubes"].add(frame_id)
        else:
            summary["frames_without_cube"] += 1
            summary["_cubeless"].add(frame_id)
        capture = header.get("capture_ns")
        if isinstance(capture, int):
            lo, hi = summary["_capture"]
            summary["_capture"] = (capture if lo is None else min(lo, capture),
                                   capture if hi is None else max(hi, capture))
    elif entry.kind == "masks":
        masks = entry.decode()
        assert isinstance(masks, MaskBroadcast)
        if masks.frame_id in summary["_masked"]:
            summary["refresh_masks"] += 1
        else:
            summary["masks"] += 1
            summary["_masked"].add(masks.frame_id)
        summary["objects"].update(o.object_id for o in masks.objects)
    elif entry.kind == "prompt":
        event = entry.decode()
        assert isinstance(event, PromptEvent)
        summary["prompts_ok" if event.ok else "prompts_refused"] += 1
        summary["prompt_ops"][str(event.request.get("op"))] += 1


def recorded_frames(recording: Recording, stream: str | None = None) -> Iterator[CubeFrame]:
    """Every recorded frame that carries its cube, in log-time order (of ``stream`` when given)."""
    for entry in recording.entries(("frame",)):
        if stream is not None and entry.stream != stream:
            continue
        try:
            if not has_cube(entry.frame_header()):
                continue
            frame = entry.decode()
        except ProtocolError:
            recording.unreadable["frame"] += 1
            continue
        yield frame


__all__ = ["Entry", "Recording", "RecordingError", "SUFFIX", "has_cube", "is_recording", "recorded_frames"]
