"""The recorder in one process: frames through an in-process shared-memory link, broadcasts over an inproc
XPUB socket the test plays publisher on. What arrives is recorded as sent, a full backlog drops and counts
instead of waiting, lapped and missing frames are counted, and a failing disk ends the recording."""

from __future__ import annotations

import errno
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from samsa_stream import __version__
from samsa_stream.errors import CommandError
from samsa_stream.protocol import CubeFrame
from samsa_stream.recording import format
from samsa_stream.recording.recorder import Backlog, Entry, Recorder, RecordOptions, run_record
from samsa_stream.recording.writer import WriterOptions
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import Settings, load_settings
from samsa_stream.transport import FrameSender, InProcessLink, SocketFactory
from tests.conftest import phantom_frames
from tests.recording.test_writer import (
    masks_message,
    overlay_message,
    prompt_event,
    read_all,
    read_until_damage,
    same_message,
    stats_of,
    stream_message,
)


class Node:
    """What the recorder listens to: an in-process frame link (cubes in shared memory) and a broadcast XPUB."""

    def __init__(self, settings: Settings, context: zmq.Context, slots: int = 4) -> None:
        self.settings, self.context = settings, context
        self.link = InProcessLink(capacity=32, shared_memory=True, slots=slots)
        self.sender: FrameSender = self.link.sender(ProcessStats("ingest"))
        self.xpub = context.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 0)
        self.xpub.bind(settings.endpoints.broadcast)
        self.sockets = SocketFactory(settings, context)

    def recorder(self, tmp_path: Path, opener: Any = None, **options: Any) -> Recorder:
        kwargs = {"opener": opener} if opener is not None else {}
        recorder = Recorder(self.settings, RecordOptions(out=tmp_path / "session.mcap", **options), link=self.link,
                            sockets=self.sockets, **kwargs)
        for _ in recorder.subscriber.prefixes():  # every subscription has reached the publisher: nothing is lost
            assert self.xpub.poll(5000), "the recorder's subscription did not arrive"
            self.xpub.recv()
        return recorder

    def publish(self, kind: str, message: Any) -> None:
        topic = {"masks": "mask", "prompt": "prompt", "stream": "stream", "overlay": "overlay"}[kind]
        self.xpub.send_multipart([f"{topic}/{message.stream_id}/".encode(), *message.to_parts()])

    def close(self) -> None:
        self.sender.close()
        self.xpub.close(0)
        self.sockets.close()
        self.link.close()


@pytest.fixture
def node() -> Iterator[Node]:
    settings = load_settings(overrides={"endpoints": {"broadcast": f"inproc://broadcast-{uuid.uuid4().hex}"}})
    context = zmq.Context()
    n = Node(settings, context)
    yield n
    n.close()
    context.term()


def serve(recorder: Recorder, done: Callable[[dict[str, int]], bool], limit: int = 500) -> dict[str, int]:
    """Poll until ``done(counters)``; fails after ``limit`` passes with nothing more to do."""
    for _ in range(limit):
        if done(recorder.stats.counters):
            return dict(recorder.stats.counters)
        recorder.poll(20)
    pytest.fail(f"the recorder never got there: {dict(recorder.stats.counters)}")


def by_topic(path: Path) -> dict[str, list[Any]]:
    _, messages, _ = read_all(path)
    out: dict[str, list[Any]] = {}
    for channel, _, message in messages:
        out.setdefault(channel.topic, []).append(message)
    return out


def test_what_arrives_is_recorded_as_sent(node: Node, tmp_path: Path) -> None:
    recorder = node.recorder(tmp_path, writer=WriterOptions(chunk_bytes=8192))
    recorder.start()
    sent: dict[str, list[Any]] = {}
    for stream in ("cam0", "cam1"):
        _, frames = phantom_frames(bands=6, height=12, width=16, count=4, stream_id=stream)
        for k, frame in enumerate(frames):
            node.sender.send(frame)  # stamps ingest_out: the hops as the ingest sent them
            published = [("masks", masks_message(frame, k + 1)), ("stream", stream_message(frame, k + 1)),
                         ("overlay", overlay_message(frame, k + 1))]
            if k == 2:
                published.insert(0, ("prompt", prompt_event(stream, frame.frame_id, frame.capture_ns + 7, 1)))
            for kind, message in published:
                node.publish(kind, message)
            sent.setdefault(format.topic_of("frame", stream), []).append(("frame", frame))
            for kind, message in published:
                sent.setdefault(format.topic_of(kind, stream), []).append((kind, message))
            total = sum(len(items) for items in sent.values())
            serve(recorder, lambda c, n=total: sum(
                c[k] for k in ("frames_queued", "masks_received", "stream_infos_received", "overlays_received",
                               "prompt_events_received")) == n)
    final = recorder.close()
    assert final["frames_recorded"] == 8 and final["masks_recorded"] == 8 and final["prompts_recorded"] == 2
    assert final["overlays_recorded"] == 8 and final["stream_infos_recorded"] == 8
    assert not any(final.get(f"{k}_dropped") for k in ("frames", "masks", "overlays", "stream_infos", "prompts"))

    summary, messages, metadata = read_all(recorder.paths[0])
    recorded = by_topic(recorder.paths[0])
    assert set(recorded) == set(sent) | {format.STATS_TOPIC}
    for topic, items in sent.items():
        stream, kind = format.parse_topic(topic)
        assert len(recorded[topic]) == len(items), topic
        for message, (_, original) in zip(recorded[topic], items, strict=True):
            same_message(kind, format.decode(kind, message.data), original)
            publish = original.handled_ns if kind == "prompt" else original.capture_ns
            assert message.publish_time == publish
    assert [h[0] for h in format.decode("frame", recorded["/cam0/frame"][0].data).hops] == ["ingest_out"]
    log_times = [m.log_time for _, _, m in messages]
    assert log_times == sorted(set(log_times))
    in_file = stats_of(recorded[format.STATS_TOPIC][-1])  # written before the summary: fewer bytes_written
    assert {k: v for k, v in in_file.items() if k != "bytes_written"} == {
        k: v for k, v in final.items() if k != "bytes_written"}
    meta = metadata[0].metadata
    assert meta["format_version"] == str(format.FORMAT_VERSION) and meta["samsa_stream_version"] == __version__
    assert meta["hostname"] and int(meta["started_ns"]) > 0 and meta["started"].endswith("+00:00")
    assert json.loads(meta["settings"])["endpoints"]["broadcast"] == node.settings.endpoints.broadcast
    assert json.loads(meta["recorder"])["compression"] == "none"
    assert recorder.stats.info["files"] == [str(recorder.paths[0])]


def test_every_nth_frame_as_float16(node: Node, tmp_path: Path) -> None:
    recorder = node.recorder(tmp_path, cube_every=3, cube_dtype="float16")
    recorder.start()
    _, frames = phantom_frames(bands=6, height=12, width=16, count=7)
    for n, frame in enumerate(frames, start=1):
        node.sender.send(frame)
        serve(recorder, lambda c, n=n: c["frames_received"] == n)
    final = recorder.close()
    assert final["frames_recorded"] == 3 and final["frames_skipped"] == 4
    got = [format.decode("frame", m.data) for m in by_topic(recorder.paths[0])["/cam0/frame"]]
    assert [f.frame_id for f in got] == [0, 3, 6]
    for frame in got:
        assert frame.cube.dtype == np.float16
        np.testing.assert_allclose(frame.cube, frames[frame.frame_id].cube, atol=1e-3)
        assert np.array_equal(frame.rgb, frames[frame.frame_id].rgb)


class StalledDisk:
    """Files whose every write waits for ``release`` (a disk that stopped answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def open(self, path: Path) -> Any:
        disk = self

        class GatedFile:
            def __init__(self) -> None:
                self.raw = open(path, "xb")  # noqa: SIM115

            def write(self, data: bytes) -> int:
                disk.release.wait()
                return self.raw.write(data)

            def flush(self) -> None:
                self.raw.flush()

            def fileno(self) -> int:
                return self.raw.fileno()

            def close(self) -> None:
                self.raw.close()

        return GatedFile()


def test_a_stalled_disk_drops_and_counts_instead_of_waiting(node: Node, tmp_path: Path) -> None:
    disk = StalledDisk()
    _, frames = phantom_frames(bands=6, height=12, width=16, count=8)
    frame_bytes = frames[0].cube.nbytes + frames[0].rgb.nbytes + frames[0].wavelengths_nm.nbytes + 12 * 16 * 4
    recorder = node.recorder(tmp_path, disk.open, queue_bytes=3 * frame_bytes, queue_messages=4)
    recorder.start()  # the writer thread blocks on the file's first bytes
    for n, frame in enumerate(frames, start=1):
        node.sender.send(frame)
        node.publish("masks", masks_message(frame, 2 * n - 1))
        node.publish("masks", masks_message(frame, 2 * n))
        serve(recorder, lambda c, n=n: c["frames_received"] == n and c["masks_received"] == 2 * n)
    counters = dict(recorder.stats.counters)
    assert counters["frames_queued"] == 3 and counters["frames_dropped"] == 5
    assert counters["masks_dropped"] == 16 - 4
    disk.release.set()
    final = recorder.close()
    assert final["frames_recorded"] == 3 and final["masks_recorded"] == 4 and final["frames_dropped"] == 5
    recorded = by_topic(recorder.paths[0])
    assert [format.decode("frame", m.data).frame_id for m in recorded["/cam0/frame"]] == [0, 1, 2]
    assert stats_of(recorded[format.STATS_TOPIC][-1])["masks_dropped"] == 12


def test_lapped_and_missing_frames_are_counted_and_never_recorded_torn(tmp_path: Path) -> None:
    settings = load_settings(overrides={"endpoints": {"broadcast": f"inproc://broadcast-{uuid.uuid4().hex}"}})
    context = zmq.Context()
    node = Node(settings, context, slots=3)
    try:
        recorder = node.recorder(tmp_path, streams=("cam0",))
        recorder.start()
        _, frames = phantom_frames(bands=6, height=12, width=16, count=14)
        _, other = phantom_frames(bands=6, height=12, width=16, count=2, stream_id="cam1")
        for frame in [*frames[:6], *other]:  # a recorder that did not keep up: the ring of 3 slots came round
            node.sender.send(frame)
        serve(recorder, lambda c: c["frames_received"] == 8)
        node.sender.send(frames[6])
        serve(recorder, lambda c: c["frames_received"] == 9)
        for frame in frames[7:]:
            node.sender.send(frame)
        serve(recorder, lambda c: c["frames_received"] == 16)
        final = recorder.close()
    finally:
        node.close()
        context.term()
    got = [format.decode("frame", m.data) for m in by_topic(recorder.paths[0])["/cam0/frame"]]
    ids = [f.frame_id for f in got]
    assert ids == sorted(ids) and ids[-1] == 13 and len(ids) < 14
    gaps = sum(b - a - 1 for a, b in zip(ids, ids[1:], strict=False))
    assert gaps > 0 and final["frames_missed"] == gaps
    assert final["frames_lapped"] == 14 - len(ids) and final["frames_other_streams"] == 2
    for frame in got:  # each cube is the one sent with its id, not a later one written into the same slot
        assert np.array_equal(frame.cube, frames[frame.frame_id].cube)


def test_a_failing_disk_ends_the_recording_with_what_was_written(node: Node, tmp_path: Path) -> None:
    written: list[int] = []

    class FullDisk:
        def __init__(self, path: Path) -> None:
            self.raw = open(path, "xb")  # noqa: SIM115

        def write(self, data: bytes) -> int:
            if sum(written) + len(data) > 40_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(len(data))
            return self.raw.write(data)

        def flush(self) -> None:
            self.raw.flush()

        def close(self) -> None:
            self.raw.close()

    recorder = node.recorder(tmp_path, FullDisk, writer=WriterOptions(chunk_bytes=4096))
    recorder.start()
    _, frames = phantom_frames(bands=6, height=12, width=16, count=30)
    for n, frame in enumerate(frames, start=1):
        node.sender.send(frame)
        serve(recorder, lambda c, n=n: c["frames_received"] == n)
    serve(recorder, lambda c: recorder.failure is not None)
    recorder.close()
    assert isinstance(recorder.failure, OSError) and recorder.failure.errno == errno.ENOSPC
    messages, why = read_until_damage(recorder.paths[0].read_bytes())
    assert why and messages and all(t == "/cam0/frame" for t, _ in messages)
    for _, message in messages:
        frame: CubeFrame = format.decode("frame", message.data)
        assert np.array_equal(frame.cube, frames[frame.frame_id].cube)


def test_run_record_reports_a_recording_it_cannot_write(node: Node, tmp_path: Path) -> None:
    def refuse(path: Path) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    options = RecordOptions(out=tmp_path / "s.mcap")
    with pytest.raises(CommandError, match="Read-only file system"):
        run_record(node.settings, threading.Event(), None, options=options, link=node.link, sockets=node.sockets,
                   opener=refuse)


def test_the_duration_ends_a_recording_with_a_complete_file(node: Node, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    stats = run_record(node.settings, threading.Event(), stats_file, options=RecordOptions(
        out=tmp_path / "quiet.mcap", duration_s=0.2), link=node.link, sockets=node.sockets)
    summary, messages, metadata = read_all(tmp_path / "quiet.mcap")
    assert [c.topic for c, _, _ in messages] == [format.STATS_TOPIC] and len(metadata) == 1
    assert stats.counters["files_written"] == 1
    assert json.loads(stats_file.read_text())["files"] == [str(tmp_path / "quiet.mcap")]


def test_options_that_cannot_work_are_refused(tmp_path: Path) -> None:
    (tmp_path / "old.mcap").write_bytes(b"x")
    for options, words in [({"out": tmp_path / "old.mcap"}, "exists"), ({"out": tmp_path / "no" / "s.mcap"},
                                                                      "does not exist"),
                           ({"cube_every": 0}, "cube-every"), ({"streams": ("cam 0",)}, "cam 0"),
                           ({"streams": ()}, "at least one stream"), ({"duration_s": -1}, "duration")]:
        with pytest.raises(CommandError, match=words):
            RecordOptions(**{"out": tmp_path / "new.mcap", **options}).check_out()


def test_backlog_bounds_frames_by_bytes_and_other_messages_by_count() -> None:
    backlog = Backlog(max_bytes=100, max_messages=2)
    assert backlog.put(Entry("frame", nbytes=150))  # one frame always fits an empty backlog
    assert not backlog.put(Entry("frame", nbytes=1))
    assert backlog.put(Entry("masks")) and backlog.put(Entry("overlay")) and not backlog.put(Entry("prompt"))
    backlog.put_control(Entry("stats"))  # control entries are never refused
    assert [backlog.take(0).kind for _ in range(4)] == ["frame", "masks", "overlay", "stats"]
    assert backlog.take(0) is None and backlog.put(Entry("frame", nbytes=60)) and backlog.put(Entry("frame", nbytes=40))
