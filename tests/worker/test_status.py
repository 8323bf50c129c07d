"""The status reply: always encodable and small, with per-stage latencies of the frames segmented."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from samsa_stream.protocol import ClickPrompt, PromptReply, StatusPrompt, stamp
from samsa_stream.runtime import INT64_MAX, INT64_MIN, MAX_ERROR_CHARS, LatencyWindow, ProcessStats
from samsa_stream.settings import Settings, load_settings
from samsa_stream.worker.core import STATUS_BYTES, Worker
from samsa_stream.worker.prompts import MAX_CLICKS_PER_OBJECT, MAX_LABEL, MAX_OBJECTS, Click
from tests.conftest import phantom_frames


def test_counters_past_64_bits_are_clamped_in_a_snapshot() -> None:
    stats = ProcessStats("worker")
    stats.count("huge", 2**70)
    stats.count("huge", 2**70)
    stats.count("negative", -(2**80))
    counters = stats.snapshot()["counters"]
    assert counters == {"huge": INT64_MAX, "negative": INT64_MIN}
    msgpack.packb(stats.snapshot())


def test_long_error_texts_are_cut() -> None:
    stats = ProcessStats("worker")
    for _ in range(100):
        stats.error("bad", "x" * 100_000)
    errors = stats.snapshot()["recent_errors"]
    assert len(errors) == 20 and all(len(e) <= MAX_ERROR_CHARS for e in errors)
    assert stats.counters["bad"] == 100


def test_latency_window_is_bounded() -> None:
    window = LatencyWindow()
    for k in range(5000):
        window.add(float(k))
    assert window.summary()["count"] == 1000 and window.summary()["p50"] >= 4000


def test_status_reports_per_stage_latencies(settings: Settings) -> None:
    _, frames = phantom_frames(count=3)
    worker = Worker(settings)
    for frame in frames:
        frame.hops.append(["ingest_out", frame.capture_ns + 1_000_000])
        frame.hops.append(["worker_in", frame.capture_ns + 3_000_000])
        worker.accept(frame)
        result = worker.segment("cam0")
        stamp(result.hops, "worker_out")
        worker.observe_result(result)
    latency = worker.handle_prompt(StatusPrompt()).state["latency_ms"]
    assert set(latency) == {"frame_link", "wait", "segment", "capture_to_worker_out"}
    assert all(latency[k]["count"] == 3 for k in latency)
    assert latency["frame_link"]["p50"] == 2.0 and latency["frame_link"]["max"] == 2.0
    assert 0 <= latency["segment"]["p50"] <= latency["capture_to_worker_out"]["p50"]
    assert {"p50", "p95", "max"} <= set(latency["wait"])


def test_a_prompt_refresh_is_timed_but_not_counted_as_a_new_frame(settings: Settings) -> None:
    cam, (frame,) = phantom_frames(count=1)
    frame.hops.append(["worker_in", frame.capture_ns])
    worker = Worker(settings)
    worker.accept(frame)
    for oid in (1, 2):
        result = worker.segment("cam0")
        stamp(result.hops, "worker_out")
        worker.observe_result(result)
        worker.observe_result(result)  # a second call for the same result adds nothing
        assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=oid, x=cam.centre(oid - 1, 0)[0],
                                                y=cam.centre(oid - 1, 0)[1])).ok
    latency = worker.stats.snapshot()["latency_ms"]
    assert latency["segment"]["count"] == 2 and latency["capture_to_worker_out"]["count"] == 1
    assert latency["wait"]["count"] == 1


@pytest.mark.parametrize("streams, detail", [(1, "clicks"), (8, "objects"), (128, "counts")])
def test_status_stays_small_with_every_stream_full(streams: int, detail: str) -> None:
    settings = load_settings(overrides={"worker": {"max_streams": streams}})
    worker = Worker(settings)
    cam, (frame,) = phantom_frames(count=1, bands=4)
    x, y = cam.centre(0, 0)
    click = Click(x, y, True, 0, frame.cube[int(y), int(x)].copy(), frame.wavelengths_nm)
    for s in range(streams):
        sid = f"camera-{s:03d}"
        worker.accept(replace(frame, stream_id=sid))
        book = worker.streams[sid].book
        for oid in range(1, MAX_OBJECTS + 1):
            for _ in range(MAX_CLICKS_PER_OBJECT if s == 0 else 1):
                book.add_click(oid, click, "l" * MAX_LABEL)
    reply = worker.handle_prompt(StatusPrompt())
    parts = reply.to_parts()
    assert len(parts[0]) <= STATUS_BYTES
    state = PromptReply.from_parts(parts).state
    assert state["streams_detail"] == detail and len(state["streams"]) == streams
    assert state["streams"]["camera-000"]["click_count"] == MAX_OBJECTS * MAX_CLICKS_PER_OBJECT


def test_status_lists_clicks_when_small(settings: Settings) -> None:
    cam, (frame,) = phantom_frames(count=1)
    worker = Worker(settings)
    worker.accept(frame)
    worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=cam.centre(0, 0)[0], y=cam.centre(0, 0)[1]))
    state = worker.handle_prompt(StatusPrompt()).state
    (obj,) = state["streams"]["cam0"]["objects"]
    assert state["streams_detail"] == "clicks" and obj["click_count"] == 1 and len(obj["clicks"]) == 1
    assert state["streams"]["cam0"]["last_frame_id"] == 0 and state["streams"]["cam0"]["frames_kept"] == 1


def test_the_status_command_prints_latencies_and_objects(settings: Settings) -> None:
    from samsa_stream.commands.status import format_status

    cam, (frame,) = phantom_frames(count=1)
    frame.hops += [["ingest_out", frame.capture_ns + 1_000_000], ["worker_in", frame.capture_ns + 2_000_000]]
    worker = Worker(settings)
    worker.accept(frame)
    worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=cam.centre(0, 0)[0], y=cam.centre(0, 0)[1],
                                     label="liver"))
    result = worker.segment("cam0")
    stamp(result.hops, "worker_out")
    worker.observe_result(result)
    text = format_status(PromptReply.from_parts(worker.handle_prompt(StatusPrompt()).to_parts()).state, "ipc://x")
    assert "latency frame link (ingest_out -> worker_in): p50 1.0 ms, p95 1.0 ms, max 1.0 ms (1 frames)" in text
    assert "latency segmentation (start -> worker_out): p50" in text
    assert "stream cam0: last frame 0; objects: 1 'liver' (1 click(s))" in text
    empty = format_status(Worker(settings).status(), "ipc://x")
    assert "latency capture -> worker_out: no frames yet" in empty
