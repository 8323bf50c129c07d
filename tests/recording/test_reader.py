"""Reading recordings: messages in log-time order, frames with and without cubes, the lockstep plan,
damaged files, and what ``inspect`` and ``convert`` make of a recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mcap.writer import CompressionType

from samsa_stream import cli
from samsa_stream.protocol import CubeFrame, MaskBroadcast, PromptEvent
from samsa_stream.recording.reader import Recording, RecordingError, recorded_frames
from samsa_stream.recording.replay import FrameStep, PromptStep, plan
from tests.conftest import phantom_frames
from tests.recording.sessions import SessionWriter, click_event, masks_of


def write_session(path: Path, compression: CompressionType = CompressionType.NONE,
                  chunk_size: int = 1 << 20) -> list[CubeFrame]:
    """Frames 0..5 of cam0: frame 3 recorded without its cube, frame 4 never segmented; a click on frame 1
    with its refresh, a refused click on frame 2 (no refresh), a click handled together with frame 5."""
    cam, frames = phantom_frames(bands=8, height=12, width=16, count=6)
    with SessionWriter(path, compression, chunk_size) as w:
        seq = 0

        def result(k: int, objects: dict[int, np.ndarray]) -> None:
            nonlocal seq
            seq += 1
            w.add(masks_of(frames[k], objects, seq))

        obj = {1: cam.labels(1) == 1}
        w.add(frames[0])
        result(0, {})
        w.add(frames[1])
        result(1, {})
        w.add(click_event("cam0", 1, 5.0, 6.0, 1))
        result(1, obj)
        w.add(frames[2])
        result(2, obj)
        w.add(click_event("cam0", 2, 0.0, 0.0, 2, ok=False, positive=False))  # a first click must be positive
        w.add(frames[3], cube=False)
        result(3, obj)
        w.add(frames[4])
        w.add(click_event("cam0", 1, 7.0, 6.0, 4, positive=False, request_id=3))
        result(5, obj)  # its cube comes after its result
        w.add(frames[5])
        w.stats({"frames_recorded": 6, "masks_missed": 2})
        w.stats({"frames_recorded": 6, "masks_missed": 3})
    return frames


def test_messages_come_in_log_time_order_and_decode(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    frames = write_session(path, CompressionType.ZSTD)
    recording = Recording(path)
    kinds = [e.kind for e in recording.entries()]
    assert kinds[:4] == ["frame", "masks", "frame", "masks"] and kinds.count("prompt") == 3
    decoded = [m for _, m in recording.decoded(("masks", "prompt"))]
    assert [type(m) for m in decoded[:3]] == [MaskBroadcast, MaskBroadcast, PromptEvent]
    cubes = list(recorded_frames(recording))
    assert [f.frame_id for f in cubes] == [0, 1, 2, 4, 5]
    assert np.array_equal(cubes[0].cube, frames[0].cube) and not recording.unreadable
    assert recording.stats() == {"frames_recorded": 6, "masks_missed": 3}  # the last counters written


def test_the_plan_says_what_the_worker_did(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_session(path)
    the_plan = plan(Recording(path))
    shape = [(type(s).__name__, s.frame_id if isinstance(s, FrameStep) else s.refresh is not None)
             for s in the_plan.steps]
    assert shape == [("FrameStep", 0), ("FrameStep", 1), ("PromptStep", True), ("FrameStep", 2),
                     ("PromptStep", False), ("FrameStep", 3), ("PromptStep", False), ("FrameStep", 5)]
    frame3 = next(s for s in the_plan.steps if isinstance(s, FrameStep) and s.frame_id == 3)
    assert frame3.capture_ns is None  # no cube recorded: cannot be sent
    assert set(the_plan.cubes) == {("cam0", k) for k in (0, 1, 2, 4, 5)}
    assert the_plan.streams == ["cam0"] and the_plan.frames == 5
    prompts = [s for s in the_plan.steps if isinstance(s, PromptStep)]
    assert prompts[1].event.decode().ok is False


def test_a_recording_cut_short_reads_up_to_where_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, chunk_size=2048)  # several chunks, as a long session has
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the recorder was killed: no summary, a torn record
    recording = Recording(cut)
    kinds = [e.kind for e in recording.entries()]
    assert 0 < len(kinds) < 14 and kinds[0] == "frame"
    assert "truncated" in recording.unreadable
    info = recording.describe()
    assert info["compression"][-1].startswith("unknown")


def test_not_a_recording_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such file"):
        Recording(tmp_path / "absent.mcap")
    (tmp_path / "x.mcap").write_bytes(b"not mcap at all")
    with pytest.raises(RecordingError, match="not an MCAP recording"):
        Recording(tmp_path / "x.mcap")


def test_inspect_summarises_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, CompressionType.ZSTD)
    assert cli.main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cam = info["streams"]["cam0"]
    assert (cam["frames"], cam["frames_with_cube"], cam["frames_without_cube"]) == (6, 5, 1)
    assert (cam["masks"], cam["refresh_masks"], cam["prompts_ok"], cam["prompts_refused"]) == (5, 1, 2, 1)
    assert cam["objects"] == [1] and info["recorder_stats"]["masks_missed"] == 3
    assert info["compression"] == ["zstd"] and info["file_bytes"] == path.stat().st_size
    assert {c["topic"] for c in info["channels"]} == {"/cam0/frame", "/cam0/masks", "/cam0/prompt",
                                                     "/recorder/stats"}
    assert cli.main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "cam0" in text and "without cube: 1" in text and "refused 1" in text


def test_convert_extracts_the_cubes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.mcap"
    frames = write_session(path)
    out = tmp_path / "cubes.npz"
    assert cli.main(["convert", str(path), str(out)]) == 0
    with np.load(out) as npz:
        assert npz["cubes"].shape == (5, 12, 16, 8)
        assert list(npz["frame_ids"]) == [0, 1, 2, 4, 5]
        assert list(npz["capture_ns"]) == [frames[k].capture_ns for k in (0, 1, 2, 4, 5)]
        assert np.array_equal(npz["cubes"][3], frames[4].cube)
        assert np.array_equal(npz["wavelengths_nm"], frames[0].wavelengths_nm)
    one = tmp_path / "one.npz"
    assert cli.main(["convert", str(path), str(one), "--frame", "2"]) == 0
    with np.load(one) as npz:
        assert np.array_equal(npz["cube"], frames[2].cube)
    assert cli.main(["convert", str(path), str(one), "--frame", "3"]) == 1
    assert "frame 3" in capsys.readouterr().err
