"""Writes a session recording: one MCAP file, or a numbered series when a size or time limit rolls it over.

``RecordingWriter(out, options, metadata)`` opens ``out`` and writes the MCAP header and the
metadata record (``format.METADATA_NAME``); ``write(kind, stream, data, publish_ns, log_ns)``
adds one message on channel ``/<stream>/<kind>`` (its schema and channel are written the first
time a file needs them); ``write_stats`` adds a ``/recorder/stats`` message; ``close`` writes
the counters once more and the summary, so every file ends complete and indexed.

Crash safety: messages go into chunks of about ``chunk_bytes``; each chunk is flushed to the
operating system as soon as it is complete (and synced to disk with ``fsync``), so after a
SIGKILL (or, with ``fsync``, a power loss) everything up to the last complete chunk is readable
with a streaming MCAP reader.

Rollover: the k-th continuation of ``SESSION.mcap`` is ``SESSION-000k.mcap``. Each continuation
starts with its own header, metadata (``part`` = k), schemas and channels, and repeats each
stream's latest ``stream`` message, so it can be read on its own.

Pure file writing: no sockets, no threads. The recorder (``recorder.py``) calls it from its
writer thread.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from mcap.well_known import SchemaEncoding
from mcap.writer import CompressionType, Writer

from ..errors import CommandError
from ..protocol import now_ns
from ..settings import RecordSettings
from .format import KINDS, LIBRARY, METADATA_NAME, PROFILE, STATS_KIND, STATS_TOPIC, Kind, topic_of

log = logging.getLogger(__name__)

Compression = Literal["none", "lz4", "zstd"]
COMPRESSIONS: dict[str, CompressionType] = {"none": CompressionType.NONE, "lz4": CompressionType.LZ4,
                                            "zstd": CompressionType.ZSTD}
DEFAULT_COMPRESSION: Compression = RecordSettings().compression  # the defaults live in the settings
DEFAULT_CHUNK_BYTES = RecordSettings().chunk_bytes
# The counter that says how many messages of a kind a file holds: frames_recorded, masks_recorded, ...
RECORDED = {"frame": "frames", "masks": "masks", "prompt": "prompts", "stream": "stream_infos",
            "overlay": "overlays"}

Opener = Callable[[Path], BinaryIO]


def part_path(out: Path, part: int) -> Path:
    """File ``part`` of a recording: ``out`` itself for 0, ``<stem>-<part:04d><suffix>`` after a rollover."""
    if part < 0:
        raise ValueError(f"a recording's part number is >= 0, got {part}")
    return out if part == 0 else out.with_name(f"{out.stem}-{part:04d}{out.suffix}")


def exclusive_open(path: Path) -> BinaryIO:
    """Create ``path`` for writing; a file already there is never overwritten (CommandError)."""
    try:
        return open(path, "xb")  # noqa: SIM115 - closed by RecordingWriter
    except FileExistsError:
        raise CommandError(f"{path} exists; a recording never overwrites a file (choose another --out)") from None
    except OSError as exc:
        raise CommandError(f"cannot create the recording {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class WriterOptions:
    """How the files are written: chunk compression and size, rollover limits (0 = none), fsync per chunk."""

    compression: Compression = DEFAULT_COMPRESSION
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_bytes: int = 0  # roll over before a message would take the file past this many bytes
    max_seconds: float = 0.0  # roll over at the first message this long (log time) after the file began
    fsync: bool = False  # sync each chunk to disk: survives a power loss, costs a disk flush per chunk

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise CommandError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.chunk_bytes < 1024:
            raise CommandError(f"chunk size must be at least 1024 bytes, got {self.chunk_bytes}")
        if self.max_bytes < 0 or self.max_seconds < 0:
            raise CommandError("rollover limits (max bytes, max seconds) must be >= 0 (0 = no limit)")
        if 0 < self.max_bytes < self.chunk_bytes:
            raise CommandError(f"max bytes ({self.max_bytes}) must be at least the chunk size ({self.chunk_bytes})")


class _File:
    """The open file under the MCAP writer: counts what was written, flushes what the writer finished."""

    def __init__(self, raw: BinaryIO, fsync: bool) -> None:
        self.raw, self.fsync = raw, fsync
        self.position = 0
        self.flushed = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self, sync: bool) -> None:
        """Hand what was written to the operating system (and to the disk when ``sync``)."""
        if self.position == self.flushed:
            return
        self.raw.flush()
        self.flushed = self.position
        if sync and hasattr(self.raw, "fileno"):
            os.fsync(self.raw.fileno())

    def close(self) -> None:
        self.raw.close()


class _Part:
    """One open file of the recording: its MCAP writer, schemas and channels."""

    def __init__(self, path: Path, file: _File, options: WriterOptions, metadata: dict[str, str]) -> None:
        self.path, self.file = path, file
        self.mcap = Writer(file, chunk_size=options.chunk_bytes, compression=COMPRESSIONS[options.compression])  # type: ignore[arg-type]
        self.mcap.start(profile=PROFILE, library=LIBRARY)
        self.mcap.add_metadata(METADATA_NAME, metadata)
        self.file.flush(options.fsync)
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.first_log_ns: int | None = None
        self.pending = 0  # message bytes added since the last complete chunk (still in the open chunk)
        self.pending_messages = 0  # and how many messages: what a crash now would lose

    def channel(self, topic: str, kind: Kind) -> int:
        channel = self.channels.get(topic)
        if channel is None:
            schema = self.schemas.get(kind.name)
            if schema is None:
                schema = self.schemas[kind.name] = self.mcap.register_schema(
                    kind.schema_name, SchemaEncoding.JSONSchema, kind.schema_bytes())
            channel = self.channels[topic] = self.mcap.register_channel(topic, kind.message_encoding, schema)
        return channel


class RecordingWriter:
    """Writes messages to ``out`` (and its continuations); ``paths`` lists the files begun so far.

    ``metadata`` (strings) goes into every file's metadata record, with ``part`` and ``file_started_ns``
    added. ``opener`` creates each file (default: ``exclusive_open``; tests pass one that blocks)."""

    def __init__(self, out: Path, options: WriterOptions, metadata: dict[str, str],
                 opener: Opener = exclusive_open) -> None:
        self.out, self.options, self.opener = out, options, opener
        self.metadata = {str(k): str(v) for k, v in metadata.items()}
        self.paths: list[Path] = []
        self.counters: Counter[str] = Counter()
        self._latest_stream: dict[str, tuple[bytes, int]] = {}  # stream -> its newest stream message, publish time
        self._last_log_ns = 0
        self._recorder_counters: dict[str, int] = {}  # the latest the recorder gave, for a rollover's stats
        self._part: _Part | None = None
        self._open(0)

    @property
    def part(self) -> _Part:
        if self._part is None:
            raise CommandError(f"the recording {self.out} is closed")
        return self._part

    def _open(self, index: int) -> None:
        path = part_path(self.out, index)
        meta = {**self.metadata, "part": str(index), "file_started_ns": str(now_ns())}
        raw = self.opener(path)
        try:
            self._part = _Part(path, _File(raw, self.options.fsync), self.options, meta)
        except BaseException:
            raw.close()
            raise
        self.paths.append(path)
        self.counters["files_written"] += 1
        log.info("recording to %s", path)

    def _log_time(self, log_ns: int) -> int:
        """``log_ns``, moved just past the previous message's when it is not later (log times strictly increase)."""
        self._last_log_ns = max(int(log_ns), self._last_log_ns + 1)
        return self._last_log_ns

    def _roll_if_due(self, size: int, log_ns: int) -> None:
        part = self.part
        if part.first_log_ns is None:
            return  # never roll over an empty file: a message larger than the limit still gets a file
        opts = self.options
        full = opts.max_bytes and part.file.position + part.pending + size > opts.max_bytes
        old = opts.max_seconds and log_ns - part.first_log_ns >= opts.max_seconds * 1e9
        if not (full or old):
            return
        self._finish_part(self.counters_for_stats(), self._log_time(self._last_log_ns))
        self._open(len(self.paths))
        for stream_id, (data, publish_ns) in sorted(self._latest_stream.items()):
            # Each continuation reads alone: it starts with every stream's newest description.
            self._add("stream", stream_id, data, publish_ns, self._log_time(log_ns), repeat=True)

    def write(self, kind: str, stream_id: str, data: bytes, publish_ns: int, log_ns: int) -> None:
        """Add one message on ``/<stream_id>/<kind>`` (``data`` as ``format`` encodes it). ``log_ns`` is moved
        just past the previous message's when it is not later, so log times strictly increase."""
        if kind not in KINDS:
            raise ValueError(f"no recorded kind {kind!r} (kinds: {', '.join(KINDS)})")
        self._roll_if_due(len(data), log_ns)
        self._add(kind, stream_id, data, publish_ns, self._log_time(log_ns))
        if kind == "stream":
            self._latest_stream[stream_id] = (data, publish_ns)

    def _add(self, kind: str, stream_id: str, data: bytes, publish_ns: int, log_ns: int, repeat: bool = False) -> None:
        part = self.part
        channel = part.channel(topic_of(kind, stream_id), KINDS[kind])
        self._message(part, channel, data, publish_ns, log_ns)
        if not repeat:
            self.counters[f"{RECORDED[kind]}_recorded"] += 1

    def _message(self, part: _Part, channel: int, data: bytes, publish_ns: int, log_ns: int) -> None:
        before = part.file.position
        part.mcap.add_message(channel, log_time=log_ns, data=data, publish_time=max(0, int(publish_ns)))
        if part.first_log_ns is None:
            part.first_log_ns = log_ns
        if part.file.position != before:  # a chunk was completed: hand it to the OS before going on
            part.file.flush(self.options.fsync)
            part.pending = part.pending_messages = 0
        else:
            part.pending += len(data)
            part.pending_messages += 1

    def counters_for_stats(self) -> dict[str, int]:
        """The recorder's latest counters with this writer's, and the bytes of every file so far."""
        done = sum(self.counters[f"{RECORDED[k]}_recorded"] for k in KINDS)
        written = self.counters["bytes_finished"] + (self._part.file.position if self._part else 0)
        return {**self._recorder_counters, **{k: v for k, v in self.counters.items() if k != "bytes_finished"},
                "messages_recorded": done, "bytes_written": written}

    def write_stats(self, counters: dict[str, int], log_ns: int) -> None:
        """Add a ``/recorder/stats`` message: the recorder's ``counters`` with this writer's."""
        self._recorder_counters = dict(counters)
        self._write_stats(self.part, self.counters_for_stats(), self._log_time(log_ns))

    def _write_stats(self, part: _Part, counters: dict[str, int], log_ns: int) -> None:
        channel = part.channels.get(STATS_TOPIC)
        if channel is None:
            schema = part.mcap.register_schema(STATS_KIND.schema_name, SchemaEncoding.JSONSchema,
                                               STATS_KIND.schema_bytes())
            channel = part.channels[STATS_TOPIC] = part.mcap.register_channel(
                STATS_TOPIC, STATS_KIND.message_encoding, schema)
        written = now_ns()
        data = json.dumps({"counters": {k: int(v) for k, v in sorted(counters.items())},
                           "written_ns": written}).encode()
        self._message(part, channel, data, written, log_ns)

    def _finish_part(self, counters: dict[str, int], log_ns: int) -> None:
        part = self.part
        self._write_stats(part, counters, log_ns)
        part.mcap.finish()
        part.file.flush(True)  # a finished file is worth one sync: its summary makes it seekable
        self.counters["bytes_finished"] += part.file.position
        part.file.close()
        self._part = None
        log.info("finished %s (%d bytes)", part.path, part.file.position)

    def close(self, counters: dict[str, int] | None = None) -> dict[str, int]:
        """Write the final ``/recorder/stats`` message (``counters`` with this writer's) and finish the file;
        returns the counters written."""
        if counters is not None:
            self._recorder_counters = dict(counters)
        final = self.counters_for_stats()
        if self._part is not None:
            self._finish_part(final, self._log_time(now_ns()))
        return {**final, "bytes_written": self.counters["bytes_finished"]}

    def abandon(self) -> None:
        """Close the file without finishing it (after a write error); what was flushed stays readable."""
        if self._part is not None:
            try:
                self._part.file.close()
            except OSError:
                pass
            self._part = None


__all__ = ["COMPRESSIONS", "DEFAULT_CHUNK_BYTES", "DEFAULT_COMPRESSION", "RECORDED", "Compression",
           "RecordingWriter", "WriterOptions", "exclusive_open", "part_path"]
