"""Objects followed by SAM2 streaming memory in the worker: independent objects and streams, undo,
late clicks, restarts of the stream, and memory that survives a worker restart (in one process;
tests/integration/test_sam2_worker.py kills a real worker process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsa_stream.protocol import ClickPrompt, RemovePrompt, ResetPrompt, SegmentationResult, UndoPrompt
from samsa_stream.settings import Settings, load_settings
from samsa_stream.worker.core import Worker
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_engine import Sam2TrackMemory
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE

FRAMES = 12


def settings_for(**worker: object) -> Settings:
    return load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "seed": 7,
                                               "image_size": IMAGE_SIZE, "device": "cpu", **worker}})


@pytest.fixture(scope="module")
def scene():
    return phantom_frames(bands=16, height=64, width=80, count=FRAMES, objects=2, motion_px=2.0)


def rgb_worker(runner, **worker: object) -> Worker:
    settings = settings_for(**worker)
    return Worker(settings, engine=RgbEngine(runner, settings.worker))


def prompt(worker: Worker, request) -> None:
    reply = worker.handle_prompt(request)
    assert reply.ok, reply.error


def click(worker: Worker, oid: int, xy: tuple[float, float], positive: bool = True, stream: str = "cam0",
          frame_id: int | None = None) -> None:
    prompt(worker, ClickPrompt(stream_id=stream, object_id=oid, x=float(xy[0]), y=float(xy[1]), positive=positive,
                               frame_id=frame_id))


def masks_of(result: SegmentationResult) -> dict[int, np.ndarray]:
    return {o.object_id: o.mask for o in result.objects}


def run(worker: Worker, frames, actions: dict[int, list] | None = None, stream: str = "cam0",
        ) -> dict[int, dict[int, np.ndarray]]:
    """Each frame: accept it, apply that frame's actions (then segment, as after a prompt), segment.
    Returns every object's mask per frame id (the last segmentation of each frame)."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for frame in frames:
        worker.accept(frame)
        for action in (actions or {}).get(frame.frame_id, []):
            action(worker)
        if worker.streams[stream].book.objects:
            out[frame.frame_id] = masks_of(worker.segment(stream))
    return out


def track_of(worker: Worker, oid: int, stream: str = "cam0") -> Sam2TrackMemory:
    kept = worker.streams[stream].memory[oid].engine
    assert isinstance(kept, Sam2TrackMemory)
    return kept


def test_a_second_object_added_mid_stream_leaves_the_first_bit_identical(runner, scene) -> None:
    cam, frames = scene
    first = {0: [lambda w: click(w, 1, cam.centre(0, 0))]}
    alone = run(rgb_worker(runner), frames, first)
    both = run(rgb_worker(runner), frames, {**first, 5: [lambda w: click(w, 2, cam.centre(1, 5))]})
    assert all(2 in both[t] for t in range(5, FRAMES)) and all(2 not in both[t] for t in range(5))
    for t in range(FRAMES):
        assert np.array_equal(alone[t][1], both[t][1]), t
    assert any(alone[t][1].any() for t in range(FRAMES))  # not a comparison of empty masks


def test_removing_or_resetting_one_object_leaves_the_others(runner, scene) -> None:
    cam, frames = scene
    first = {0: [lambda w: click(w, 1, cam.centre(0, 0))]}
    alone = run(rgb_worker(runner), frames, first)
    removed = run(rgb_worker(runner), frames, {0: [lambda w: click(w, 1, cam.centre(0, 0)),
                                                   lambda w: click(w, 2, cam.centre(1, 0))],
                                               4: [lambda w: prompt(w, RemovePrompt(stream_id="cam0", object_id=2))]})
    for t in range(FRAMES):
        assert np.array_equal(alone[t][1], removed[t][1]), t
    assert all(set(removed[t]) == {1} for t in range(4, FRAMES))
    # A reset forgets every object and its memory; clicking again starts afresh.
    worker = rgb_worker(runner)
    run(worker, frames[:3], first)
    prompt(worker, ResetPrompt(stream_id="cam0"))
    assert worker.streams["cam0"].memory == {}


def test_undoing_a_correction_goes_back_to_the_memory_before_it(runner, scene) -> None:
    cam, frames = scene
    first = {0: [lambda w: click(w, 1, cam.centre(0, 0))]}
    plain = run(rgb_worker(runner), frames, first)
    x, y = cam.centre(0, 6)
    undone = run(rgb_worker(runner), frames, {**first, 6: [lambda w: click(w, 1, (x + 9, y + 9), positive=False),
                                                           lambda w: prompt(w, UndoPrompt(stream_id="cam0"))]})
    corrected = run(rgb_worker(runner), frames, {**first, 6: [lambda w: click(w, 1, (x + 9, y + 9), positive=False)]})
    for t in range(FRAMES):
        assert np.array_equal(plain[t][1], undone[t][1]), t
    assert any(not np.array_equal(plain[t][1], corrected[t][1]) for t in range(6, FRAMES))  # the correction mattered


def test_a_correction_on_a_later_frame_adds_a_conditioning_frame(runner, scene) -> None:
    cam, frames = scene
    worker = rgb_worker(runner)
    run(worker, frames, {0: [lambda w: click(w, 1, cam.centre(0, 0))],
                         7: [lambda w: click(w, 1, cam.centre(0, 7))]})
    kept = track_of(worker, 1)
    assert sorted(kept.track.cond) == [0, 7] and kept.track.last_frame == FRAMES - 1


def test_a_click_on_an_older_kept_frame_is_applied_to_the_newest(runner, scene) -> None:
    """A display shows frame 4 while the worker has frame 5: the click joins the object's memory as
    a conditioning frame at the newest frame (the memory is kept, not restarted)."""
    cam, frames = scene
    worker = rgb_worker(runner)
    run(worker, frames[:6], {0: [lambda w: click(w, 1, cam.centre(0, 0))]})
    before = track_of(worker, 1)
    click(worker, 1, cam.centre(0, 4), frame_id=4)
    worker.segment("cam0")
    kept = track_of(worker, 1)
    assert kept is before and sorted(kept.track.cond) == [0, 5]
    assert worker.streams["cam0"].book.objects[1].clicks[-1].frame_id == 4  # its spectrum came from frame 4


def test_streams_are_independent(runner, scene) -> None:
    cam, frames = scene
    _, other = phantom_frames(bands=16, height=64, width=80, count=FRAMES, objects=2, motion_px=2.0,
                              stream_id="cam1")
    alone = run(rgb_worker(runner), frames, {0: [lambda w: click(w, 1, cam.centre(0, 0))]})
    worker = rgb_worker(runner)
    mixed: dict[int, dict[int, np.ndarray]] = {}
    for a, b in zip(frames, other, strict=True):
        worker.accept(b)
        if a.frame_id == 2:
            click(worker, 1, cam.centre(1, 2), stream="cam1")
        if worker.streams["cam1"].book.objects:
            worker.segment("cam1")
        mixed.update(run(worker, [a], {0: [lambda w: click(w, 1, cam.centre(0, 0))]}))
    for t in range(FRAMES):
        assert np.array_equal(alone[t][1], mixed[t][1]), t


def test_a_stream_restart_keeps_the_clicked_memory_and_drops_the_recent_window(runner, scene) -> None:
    cam, frames = scene
    worker = rgb_worker(runner)
    run(worker, frames[:8], {0: [lambda w: click(w, 1, cam.centre(0, 0))]})
    kept = track_of(worker, 1)
    assert kept.track.recent
    restarted = phantom_frames(bands=16, height=64, width=80, count=3, objects=2, motion_px=2.0)[1]
    results = [worker.segment("cam0") for f in restarted if worker.accept(f)]  # ids 0, 1, 2 again
    assert worker.stats.counters["stream_restarts"] == 1
    assert track_of(worker, 1) is kept and list(kept.track.cond) == [0]
    # The new frames continue the object's timeline after the last frame it saw (7), in order.
    assert kept.track.last_frame == 7 + 3 and sorted(kept.track.recent) == [8, 9, 10]
    assert all(r.objects and r.objects[0].object_id == 1 for r in results)


def test_dropped_frames_leave_a_gap_in_temporal_positions(runner, scene) -> None:
    cam, frames = scene
    worker = rgb_worker(runner)
    run(worker, [frames[0], frames[1], frames[6], frames[9]], {0: [lambda w: click(w, 1, cam.centre(0, 0))]})
    kept = track_of(worker, 1)
    assert kept.offset == 0 and sorted(kept.track.recent) == [1, 6, 9]
    assert worker.stats.counters["frames_dropped"] == 4 + 2


def test_memory_survives_a_worker_restart_and_continues_bit_identically(runner, scene, tmp_path: Path) -> None:
    cam, frames = scene
    state = tmp_path / "prompts.json"
    first = rgb_worker(runner, state_file=str(state))
    run(first, frames[:1], {0: [lambda w: click(w, 1, cam.centre(0, 0)), lambda w: click(w, 2, cam.centre(1, 0))]})
    assert first.stats.counters["tracks_saved"] == 2
    assert sorted(p.name for p in (tmp_path / "prompts.json.tracks").iterdir()) == ["cam0.1.track", "cam0.2.track"]
    later = run(first, frames[1:])

    second = rgb_worker(runner, state_file=str(state))  # as after a kill -9: nothing but the files
    assert second.stats.counters["tracks_restored"] == 2
    again = run(second, frames[1:])
    for t in range(1, FRAMES):
        for oid in (1, 2):
            assert np.array_equal(later[t][oid], again[t][oid]), (t, oid)
    assert track_of(second, 1).applied == track_of(first, 1).applied

    prompt(second, RemovePrompt(stream_id="cam0", object_id=2))
    assert not (tmp_path / "prompts.json.tracks" / "cam0.2.track").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty", "other model", "other clicks"])
def test_a_saved_memory_that_does_not_hold_up_is_set_aside(runner, scene, tmp_path: Path, damage: str) -> None:
    cam, frames = scene
    state = tmp_path / "prompts.json"
    first = rgb_worker(runner, state_file=str(state))
    run(first, frames[:2], {0: [lambda w: click(w, 1, cam.centre(0, 0))]})
    path = tmp_path / "prompts.json.tracks" / "cam0.1.track"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        path.write_bytes(data[:-9] + bytes([data[-9] ^ 0x40]) + data[-8:])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 40)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other clicks":  # the prompts changed and the memory file did not follow
        click(first, 1, cam.centre(1, 1), positive=False)
        prompt(first, UndoPrompt(stream_id="cam0"))
        prompt(first, UndoPrompt(stream_id="cam0"))
        click(first, 1, cam.centre(0, 1))
        path.write_bytes(data)
    if damage == "other model":
        from samsa_stream.worker.engines.sam2_model import load_sam2
        from samsa_stream.worker.engines.sam2_runner import Sam2Runner

        settings = settings_for(state_file=str(state), seed=8)
        second = Worker(settings, engine=RgbEngine(Sam2Runner(load_sam2(settings.worker)), settings.worker))
    else:
        second = rgb_worker(runner, state_file=str(state))
    assert second.stats.counters["track_load_failed"] == 1 and "tracks_restored" not in second.stats.counters
    (aside,) = path.parent.glob("cam0.1.track.bad-*")
    assert aside.stat().st_size > 0 or damage == "empty"
    assert 1 in second.streams["cam0"].book.objects  # the prompts stay; the object is found from its clicks
    result = run(second, frames[2:4])
    assert set(result[3]) == {1}


def test_what_undo_keeps_stays_bounded(runner) -> None:
    """Many corrections over a long stream: at most MAX_UNDO earlier memories, each holding only its
    conditioning frames and what the next frame can still read."""
    from samsa_stream.worker.engines.sam2_engine import MAX_UNDO

    cam, frames = phantom_frames(bands=16, height=64, width=80, count=36, objects=2, motion_px=2.0)
    worker = rgb_worker(runner)
    run(worker, frames, {t: [lambda w, t=t: click(w, 1, cam.centre(0, t))] for t in range(0, 36, 3)})
    kept = track_of(worker, 1)
    window = max(worker.engine.tracker.memory_window, worker.engine.tracker.pointer_window)
    assert len(kept.undo) == MAX_UNDO
    assert len(kept.track.cond) == worker.settings.worker.max_cond_frames
    for point in kept.undo:
        assert all(t >= kept.track.last_frame - window for t in point.track.recent)
        assert len(point.track.cond) <= worker.settings.worker.max_cond_frames
