"""Stream bookkeeping in the worker: queries change nothing, streams are capped and expire, stream
ids are checked, frame-id jumps are not drops, and iterating the streams survives prompts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from samsa_stream.errors import ProtocolError
from samsa_stream.protocol import (
    ClickPrompt,
    PromptReply,
    RemovePrompt,
    ResetPrompt,
    StatePrompt,
    StatusPrompt,
    UndoPrompt,
)
from samsa_stream.settings import Settings, load_settings
from samsa_stream.worker.core import MAX_FRAME_JUMP, UNCALIBRATED_NOTICE, Worker
from tests.conftest import phantom_frames


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def worker_with(clock: FakeClock | None = None, **worker: object) -> Worker:
    settings = load_settings(overrides={"worker": worker}) if worker else load_settings()
    return Worker(settings, clock=clock or FakeClock())


def test_queries_and_failed_prompts_create_no_stream(settings: Settings) -> None:
    worker = Worker(settings)
    replies = [
        worker.handle_prompt(StatePrompt(stream_id="ghost")),
        worker.handle_prompt(StatusPrompt()),
        worker.handle_prompt(ClickPrompt(stream_id="ghost", object_id=1, x=1.0, y=1.0)),
        worker.handle_prompt(UndoPrompt(stream_id="ghost")),
        worker.handle_prompt(RemovePrompt(stream_id="ghost", object_id=1)),
    ]
    assert [r.ok for r in replies] == [True, True, False, False, False]
    assert replies[0].state == {"objects": [], "revision": 0}
    assert "no frame has arrived" in replies[2].error
    assert worker.handle_prompt(ResetPrompt(stream_id="ghost")).ok  # nothing to reset: fine, and nothing kept
    assert worker.streams == {}


def test_a_state_query_on_a_live_stream_changes_nothing(settings: Settings) -> None:
    cam, frames = phantom_frames(count=1)
    worker = Worker(settings)
    worker.accept(frames[0])
    assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=cam.centre(0, 0)[0],
                                            y=cam.centre(0, 0)[1])).ok
    worker.segment("cam0")
    reply = worker.handle_prompt(StatePrompt(stream_id="cam0"))
    assert reply.ok and [o["id"] for o in reply.state["objects"]] == [1]
    assert worker.dirty_streams() == []  # a query is not a prompt change: nothing to segment again


def test_prompts_for_new_streams_while_iterating_the_streams(settings: Settings) -> None:
    """The loop used to iterate ``worker.streams`` and serve prompts inside the loop; a prompt for an
    unseen stream created one and the iteration died ("dictionary changed size during iteration")."""
    _, frames0 = phantom_frames(count=1)
    _, frames1 = phantom_frames(count=1, stream_id="cam1")
    worker = Worker(settings)
    worker.accept(frames0[0])
    worker.accept(frames1[0])
    segmented = []
    for n, (stream_id, _stream) in enumerate(worker.streams.items()):  # the old loop's iteration
        worker.handle_prompt(StatePrompt(stream_id=f"new{n}"))
        worker.handle_prompt(ClickPrompt(stream_id=f"other{n}", object_id=1, x=1.0, y=1.0))
        worker.handle_prompt(UndoPrompt(stream_id=f"undo{n}"))
        segmented.append(worker.segment(stream_id).stream_id)
    assert segmented == ["cam0", "cam1"] and set(worker.streams) == {"cam0", "cam1"}


def test_dirty_streams_is_a_snapshot(settings: Settings) -> None:
    worker = Worker(settings)
    for sid in ("cam0", "cam1"):
        worker.accept(phantom_frames(count=1, stream_id=sid)[1][0])
    done = []
    for sid in worker.dirty_streams():
        worker.accept(phantom_frames(count=1, stream_id=f"x{sid}")[1][0])  # a new stream mid-iteration
        done.append(worker.segment(sid).stream_id)
    assert done == ["cam0", "cam1"]
    assert worker.dirty_streams() == ["xcam0", "xcam1"]


def test_stream_ids_are_checked_on_frames_and_prompts(settings: Settings) -> None:
    _, frames = phantom_frames(count=1)
    worker = Worker(settings)
    with pytest.raises(ProtocolError, match="'cam0/x' is not a stream id"):
        worker.accept(replace(frames[0], stream_id="cam0/x"))
    for request in (StatePrompt(stream_id="cam0/x"), ClickPrompt(stream_id="", object_id=1, x=1.0, y=1.0),
                    ResetPrompt(stream_id="a" * 65)):
        reply = worker.handle_prompt(request)
        assert not reply.ok and "is not a stream id" in reply.error
    assert worker.streams == {} and worker.stats.counters["prompts_rejected"] == 3


def test_streams_are_capped_least_recently_seen_first(settings: Settings) -> None:
    clock = FakeClock()
    worker = worker_with(clock, max_streams=3)
    cam, (first,) = phantom_frames(count=1, stream_id="s0")
    worker.accept(first)
    assert worker.handle_prompt(ClickPrompt(stream_id="s0", object_id=1, x=cam.centre(0, 0)[0],
                                            y=cam.centre(0, 0)[1])).ok
    for k in range(1, 8):
        clock.now += 1
        worker.accept(phantom_frames(count=1, stream_id=f"s{k}")[1][0])
        assert len(worker.streams) <= 3
    # s0 was seen first but holds an object: the streams without objects went before it.
    assert set(worker.streams) == {"s0", "s6", "s7"}
    assert worker.stats.counters["streams_evicted"] == 5
    assert set(worker.engine._last) <= set(worker.streams)  # the engine let go of the evicted streams' frames


def test_memory_stays_flat_over_many_stream_ids(settings: Settings) -> None:
    worker = worker_with(max_streams=4)
    cam, (frame,) = phantom_frames(count=1)
    x, y = cam.centre(0, 0)
    for k in range(300):
        worker.accept(replace(frame, stream_id=f"cam{k}", hops=[]))
        assert worker.handle_prompt(ClickPrompt(stream_id=f"cam{k}", object_id=1, x=x, y=y)).ok
        for sid in worker.dirty_streams():
            worker.segment(sid)
    kept_frames = sum(len(s.frames) for s in worker.streams.values())
    assert len(worker.streams) == 4 and kept_frames <= 4 * settings.worker.frame_history
    assert len(worker.engine._last) <= 4


def test_idle_streams_let_go_of_frames_and_keep_prompts() -> None:
    clock = FakeClock()
    worker = worker_with(clock, stream_idle_s=60)
    cam, (frame,) = phantom_frames(count=1)
    _, (other,) = phantom_frames(count=1, stream_id="cam1")
    worker.accept(frame)
    worker.accept(other)
    assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=cam.centre(0, 0)[0],
                                            y=cam.centre(0, 0)[1])).ok
    worker.segment("cam0")
    clock.now += 59
    assert set(worker.dirty_streams()) == {"cam1"}  # not idle yet
    clock.now += 2
    assert worker.dirty_streams() == []
    assert set(worker.streams) == {"cam0"}  # cam1 had no objects: forgotten
    cam0 = worker.streams["cam0"]
    assert not cam0.frames and [o["id"] for o in cam0.book.state()["objects"]] == [1]
    assert "cam0" not in worker.engine._last
    assert worker.stats.counters["streams_expired"] == 1 and worker.stats.counters["streams_idled"] == 1
    worker.accept(replace(frame, frame_id=1))  # the camera comes back: its object is segmented again
    assert [o.object_id for o in worker.segment("cam0").objects] == [1]


def test_idle_expiry_can_be_switched_off() -> None:
    clock = FakeClock()
    worker = worker_with(clock, stream_idle_s=0)
    worker.accept(phantom_frames(count=1)[1][0])
    clock.now += 10**9
    assert worker.dirty_streams() == ["cam0"]


@pytest.mark.parametrize("far", [MAX_FRAME_JUMP + 2, 2**63 - 1])
def test_a_frame_id_jump_is_not_counted_as_drops(settings: Settings, far: int) -> None:
    _, (frame,) = phantom_frames(count=1)
    worker = Worker(settings)
    for frame_id in (0, far, 0, far, 0, far):
        worker.accept(replace(frame, frame_id=frame_id))
    counters = worker.stats.counters
    assert counters["frames_dropped"] == 0 and counters["frame_id_jumps"] == 3 and counters["stream_restarts"] == 2
    assert len(worker.streams["cam0"].frames) == 1  # frames of the previous run are not clicked on
    PromptReply.from_parts(worker.handle_prompt(StatusPrompt()).to_parts())  # the status still encodes


def test_a_gap_below_the_jump_limit_is_drops(settings: Settings) -> None:
    _, (frame,) = phantom_frames(count=1)
    worker = Worker(settings)
    worker.accept(frame)
    worker.accept(replace(frame, frame_id=MAX_FRAME_JUMP + 1))
    assert worker.stats.counters["frames_dropped"] == MAX_FRAME_JUMP and worker.stats.counters["frame_id_jumps"] == 0


def test_scaled_raw_counts_carry_a_notice(settings: Settings) -> None:
    _, (frame,) = phantom_frames(count=1)
    worker = Worker(settings)
    worker.accept(replace(frame, calibration="scaled_counts"))
    assert UNCALIBRATED_NOTICE in worker.segment("cam0").notices
    worker.accept(replace(frame, frame_id=1))
    assert not any(n.startswith("uncalibrated") for n in worker.segment("cam0").notices)


def test_clicks_from_before_a_stream_restart_are_never_recent(settings: Settings, tmp_path) -> None:
    """The camera restarts and its frame ids come round again: a click made on frame 5 of the previous
    run is not a click on frame 5 of this one (it is not forced into the mask where the object has
    moved away), and the object is still followed by its spectrum."""
    from samsa_stream.evaluation.metrics import iou
    from samsa_stream.protocol import ClickPrompt

    cam, frames = phantom_frames(count=36, motion_px=2.0)
    state = tmp_path / "prompts.json"
    worker = Worker(settings.model_copy(update={"worker": settings.worker.model_copy(update={"state_file": state})}))
    for frame in frames[:6]:
        worker.accept(frame)
    x, y = cam.centre(0, 5)
    assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=x, y=y)).ok
    worker.segment("cam0")
    for k, frame in enumerate(frames[30:36]):  # the restarted run: ids 4..9, the object elsewhere by the end
        worker.accept(replace(frame, frame_id=4 + k))
        mask = worker.segment("cam0").objects[0].mask
        assert iou(mask, frame.labels == 1) >= 0.8, frame.frame_id
    assert frames[35].labels[round(y), round(x)] == 0 and not mask[round(y), round(x)]
    assert worker.stats.counters["stream_restarts"] == 1
    assert '"stale": true' in state.read_text()  # a worker restarted now knows it too
