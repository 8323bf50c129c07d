"""The recording writer: channels and schemas as docs/recording.md lists them, messages that decode to what
was written, strictly increasing log times, rollover into numbered files that each read alone, and files
that stay readable up to their last complete chunk when the writer dies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader

from samsa_stream.errors import CommandError
from samsa_stream.protocol import (
    CubeFrame,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    PromptEvent,
    StreamInfo,
    encode_image,
)
from samsa_stream.recording import format
from samsa_stream.recording.writer import RecordingWriter, WriterOptions, exclusive_open, part_path
from tests.conftest import phantom_frames

META = {"format_version": str(format.FORMAT_VERSION), "hostname": "test"}


def masks_message(frame: CubeFrame, seq: int) -> MaskBroadcast:
    h, w = frame.rgb.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[2:9, 3:12] = True
    return MaskBroadcast(frame.stream_id, frame.frame_id, frame.capture_ns, (h, w),
                         [ObjectMask(1, "liver", (255, 0, 0), mask, 0.875), ObjectMask(2, "gut", (0, 0, 255),
                                                                                        np.zeros((h, w), bool), 0.0,
                                                                                        present=False)],
                         "spectral", seq=seq, publisher="p" * 16)


def overlay_message(frame: CubeFrame, seq: int) -> OverlayImage:
    return OverlayImage(frame.stream_id, frame.frame_id, frame.capture_ns, "jpeg", encode_image(frame.rgb, "jpeg"),
                        seq=seq, publisher="p" * 16)


def stream_message(frame: CubeFrame, seq: int, stale: bool = False) -> StreamInfo:
    return StreamInfo(frame.stream_id, frame.frame_id, frame.capture_ns, frame.rgb.shape[:2], "spectral",
                      [float(v) for v in frame.wavelengths_nm], stale=stale, seq=seq, publisher="p" * 16)


def prompt_event(stream: str, frame_id: int, handled_ns: int, seq: int) -> PromptEvent:
    return PromptEvent(stream, {"op": "click", "request_id": seq, "object_id": 1, "x": 5, "y": 6, "positive": True},
                       True, frame_id=frame_id, revision=seq, handled_ns=handled_ns, seq=seq, publisher="p" * 16)


def session(streams: tuple[str, ...] = ("cam0", "cam1"), count: int = 3) -> list[tuple[str, str, Any, int]]:
    """(kind, stream, message, publish ns) of a short session on ``streams``, in the order a recorder sees them."""
    out: list[tuple[str, str, Any, int]] = []
    for stream in streams:
        _, frames = phantom_frames(bands=6, height=12, width=16, count=count, stream_id=stream)
        for k, frame in enumerate(frames):
            out.append(("frame", stream, frame, frame.capture_ns))
            if k == 1:
                out.append(("prompt", stream, prompt_event(stream, frame.frame_id, frame.capture_ns + 5, 1),
                            frame.capture_ns + 5))
            out.append(("masks", stream, masks_message(frame, k + 1), frame.capture_ns))
            out.append(("stream", stream, stream_message(frame, k + 1), frame.capture_ns))
            out.append(("overlay", stream, overlay_message(frame, k + 1), frame.capture_ns))
    return out


def data_of(kind: str, message: Any) -> bytes:
    return format.overlay_data(message) if kind == "overlay" else format.wire_data(message.to_parts())


def write_session(path: Path, messages: list[tuple[str, str, Any, int]], options: WriterOptions | None = None,
                  step_ns: int = 1000, opener: Any = exclusive_open) -> RecordingWriter:
    writer = RecordingWriter(path, options or WriterOptions(chunk_bytes=4096), META, opener)
    for n, (kind, stream, message, publish) in enumerate(messages):
        writer.write(kind, stream, data_of(kind, message), publish, 10**9 + n * step_ns)
    return writer


def same_message(kind: str, got: Any, sent: Any) -> None:
    """``got`` (format.decode) holds what ``sent`` held."""
    if kind == "overlay":
        assert got["data"] == sent.data and got["format"] == sent.encoding
        assert got["frame_id"] == f"{sent.stream_id}/{sent.frame_id}"
        assert got["timestamp"]["sec"] * 10**9 + got["timestamp"]["nsec"] == sent.capture_ns
        return
    assert type(got) is type(sent) and got.stream_id == sent.stream_id
    if kind == "frame":
        assert got.frame_id == sent.frame_id and got.capture_ns == sent.capture_ns and got.hops == sent.hops
        assert got.cube.dtype == sent.cube.dtype and np.array_equal(got.cube, sent.cube)
        assert np.array_equal(got.rgb, sent.rgb) and np.array_equal(got.wavelengths_nm, sent.wavelengths_nm)
        assert got.source == sent.source and (got.labels is None) == (sent.labels is None)
    elif kind == "masks":
        assert (got.frame_id, got.seq, got.publisher) == (sent.frame_id, sent.seq, sent.publisher)
        assert [(o.object_id, o.label, o.colour, o.score, o.present) for o in got.objects] == [
            (o.object_id, o.label, tuple(o.colour), o.score, o.present) for o in sent.objects]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(got.objects, sent.objects, strict=True))
    else:
        assert got.to_parts()[0] == sent.to_parts()[0]  # the whole header: prompt events and stream infos


def read_all(path: Path) -> tuple[Any, list[tuple[Channel, Schema | None, Message]], list[Metadata]]:
    with path.open("rb") as fh:
        reader = make_reader(fh, validate_crcs=True)
        summary = reader.get_summary()
        messages = [(channel, schema, message) for schema, channel, message in reader.iter_messages()]
        metadata = list(reader.iter_metadata())
    return summary, messages, metadata


def read_until_damage(data: bytes) -> tuple[list[tuple[str, Message]], str]:
    """The messages a streaming reader gets from ``data`` (a file cut anywhere) before it stops, and why it
    stopped ('' at a complete file's end)."""
    import io

    channels: dict[int, str] = {}
    messages: list[tuple[str, Message]] = []
    try:
        for record in StreamReader(io.BytesIO(data), validate_crcs=True).records:
            if isinstance(record, Channel):
                channels[record.id] = record.topic
            elif isinstance(record, Message):
                messages.append((channels[record.channel_id], record))
    except Exception as exc:  # a cut file ends in a short read, a bad CRC or a broken frame: all the same here
        return messages, type(exc).__name__
    return messages, ""


def stats_of(message: Message) -> dict[str, int]:
    payload = json.loads(message.data)
    assert set(payload) == {"counters", "written_ns"}
    return payload["counters"]


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_channels_schemas_and_messages_as_documented(tmp_path: Path, compression: str) -> None:
    sent = session()
    path = tmp_path / "session.mcap"
    writer = write_session(path, sent, WriterOptions(compression=compression, chunk_bytes=4096))  # type: ignore[arg-type]
    final = writer.close({"frames_dropped": 2})
    assert writer.paths == [path] and final["frames_recorded"] == 6 and final["frames_dropped"] == 2

    summary, messages, metadata = read_all(path)
    topics = {c.topic: c for c in summary.channels.values()}
    expected = {format.topic_of(kind, stream) for kind in format.KINDS for stream in ("cam0", "cam1")}
    assert set(topics) == expected | {format.STATS_TOPIC}
    for topic, channel in topics.items():
        kind = format.STATS_KIND if topic == format.STATS_TOPIC else format.KINDS[format.parse_topic(topic)[1]]
        schema = summary.schemas[channel.schema_id]
        assert (schema.name, schema.encoding, channel.message_encoding) == (
            kind.schema_name, "jsonschema", kind.message_encoding)
        assert json.loads(schema.data) == kind.schema
    counts = {summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()}
    assert counts[format.STATS_TOPIC] == 1 and counts["/cam0/frame"] == 3 and counts["/cam1/prompt"] == 1
    assert summary.statistics.message_count == len(sent) + 1
    assert {c.compression for c in summary.chunk_indexes} == {"" if compression == "none" else compression}

    assert [m.name for m in metadata] == [format.METADATA_NAME]
    assert metadata[0].metadata == {**META, "part": "0", "file_started_ns": metadata[0].metadata["file_started_ns"]}

    recorded = [(c, m) for c, _, m in messages if c.topic != format.STATS_TOPIC]
    assert len(recorded) == len(sent)
    for (channel, message), (kind, stream, original, publish) in zip(recorded, sent, strict=True):
        assert format.parse_topic(channel.topic) == (stream, kind)
        assert message.publish_time == publish
        same_message(kind, format.decode(kind, message.data), original)
    log_times = [m.log_time for _, _, m in messages]
    assert log_times == sorted(set(log_times))
    last_channel, _, last = messages[-1]
    assert last_channel.topic == format.STATS_TOPIC
    counters = stats_of(last)
    assert counters["frames_recorded"] == 6 and counters["masks_recorded"] == 6 and counters["prompts_recorded"] == 2
    assert counters["frames_dropped"] == 2 and counters["messages_recorded"] == len(sent)


def test_log_times_strictly_increase_whatever_the_clock_said(tmp_path: Path) -> None:
    _, frames = phantom_frames(bands=4, height=8, width=8, count=4)
    writer = RecordingWriter(tmp_path / "s.mcap", WriterOptions(), META)
    for frame, log_ns in zip(frames, [500, 500, 400, 900], strict=True):  # repeated, then earlier than before
        writer.write("frame", "cam0", data_of("frame", frame), frame.capture_ns, log_ns)
    writer.write_stats({"x": 1}, 100)
    writer.close()
    _, messages, _ = read_all(tmp_path / "s.mcap")
    assert [m.log_time for _, _, m in messages][:5] == [500, 501, 502, 900, 901]


def test_size_limit_rolls_over_into_numbered_files_that_read_alone(tmp_path: Path) -> None:
    sent = session(("cam0",), count=12)
    frame_bytes = len(data_of("frame", sent[0][2]))
    out = tmp_path / "or-7.mcap"
    writer = write_session(out, sent, WriterOptions(chunk_bytes=4096, max_bytes=4 * frame_bytes))
    writer.close({})
    assert writer.paths == [part_path(out, k) for k in range(len(writer.paths))] and len(writer.paths) >= 3
    assert [p.name for p in writer.paths[:3]] == ["or-7.mcap", "or-7-0001.mcap", "or-7-0002.mcap"]

    recorded: list[tuple[str, bytes]] = []
    for part, path in enumerate(writer.paths):
        assert path.stat().st_size <= 4 * frame_bytes + 16384  # the limit, plus the summary and the file's stats
        summary, messages, metadata = read_all(path)
        assert metadata[0].metadata["part"] == str(part)
        topics = [c.topic for c, _, _ in messages]
        assert topics[-1] == format.STATS_TOPIC and topics.count(format.STATS_TOPIC) == 1
        if part > 0:
            assert topics[0] == "/cam0/stream"  # the stream's newest description, repeated
            first = format.decode("stream", messages[0][2].data)
            previous_infos = [d for t, d in recorded if t == "/cam0/stream"]
            assert format.wire_data(first.to_parts()) == previous_infos[-1]
            messages = messages[1:]
        recorded += [(c.topic, m.data) for c, _, m in messages if c.topic != format.STATS_TOPIC]
    assert recorded == [(format.topic_of(k, s), data_of(k, m)) for k, s, m, _ in sent]
    counts = [stats_of(read_all(p)[1][-1][2]) for p in writer.paths]
    assert counts[-1]["frames_recorded"] == 12 and counts[-1]["files_written"] == len(writer.paths)
    assert [c["files_written"] for c in counts] == list(range(1, len(writer.paths) + 1))


def test_time_limit_rolls_over_by_log_time(tmp_path: Path) -> None:
    sent = session(("cam0",), count=6)
    out = tmp_path / "s.mcap"
    # 5 messages per frame, 0.1 s apart: a new file every 2 s of log time holds 20 messages
    writer = write_session(out, sent, WriterOptions(max_seconds=2.0), step_ns=10**8)
    writer.close()
    assert len(writer.paths) == 2
    first = [c.topic for c, _, _ in read_all(writer.paths[0])[1]]
    assert len(first) == 20 + 1


def test_a_killed_writer_leaves_every_complete_chunk_readable(tmp_path: Path) -> None:
    sent = session(("cam0",), count=10)
    path = tmp_path / "s.mcap"
    frame_bytes = len(data_of("frame", sent[0][2]))
    writer = write_session(path, sent, WriterOptions(compression="lz4", chunk_bytes=2 * frame_bytes),
                           opener=lambda p: open(p, "xb", buffering=2**20))  # a buffer larger than the file
    on_disk = path.read_bytes()  # what the OS has when the process dies: everything up to the last complete chunk
    lost = writer.part.pending_messages
    assert lost > 0, "the test needs messages still in the open chunk"
    messages, why = read_until_damage(on_disk)
    assert why == "EndOfFile" and len(messages) == len(sent) - lost
    for (topic, message), (kind, stream, original, publish) in zip(messages, sent, strict=False):
        assert topic == format.topic_of(kind, stream) and message.publish_time == publish
        same_message(kind, format.decode(kind, message.data), original)
    # Cut anywhere: a reader gets a prefix of the messages, never a wrong one.
    for cut in np.linspace(8, len(on_disk), 23).astype(int):
        got, _ = read_until_damage(on_disk[:cut])
        assert [(t, m.data) for t, m in got] == [(t, m.data) for t, m in messages[:len(got)]]
    writer.close()
    assert read_until_damage(path.read_bytes())[1] == ""


def test_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    path.write_bytes(b"a recording from yesterday")
    with pytest.raises(CommandError, match="exists"):
        exclusive_open(path)
    with pytest.raises(CommandError, match="exists"):
        RecordingWriter(path, WriterOptions(), META)
    assert path.read_bytes() == b"a recording from yesterday"


@pytest.mark.parametrize("options, words", [
    ({"compression": "gzip"}, "compression"),
    ({"chunk_bytes": 10}, "chunk size"),
    ({"max_bytes": -1}, ">= 0"),
    ({"max_bytes": 2048, "chunk_bytes": 4096}, "at least the chunk size"),
])
def test_options_that_cannot_work_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(CommandError, match=words):
        WriterOptions(**options)


def test_part_names() -> None:
    assert part_path(Path("/r/s.mcap"), 0) == Path("/r/s.mcap")
    assert part_path(Path("/r/s.mcap"), 12) == Path("/r/s-0012.mcap")
    assert part_path(Path("/r/s"), 1) == Path("/r/s-0001")
