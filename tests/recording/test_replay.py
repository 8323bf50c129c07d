"""The lockstep replay: a recorded session through a private node reproduces its masks exactly; what
the driver does with frames it cannot send and prompts on frames it never segmented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.recording.check import Comparison
from samsa_stream.recording.reader import Recording
from samsa_stream.recording.replay import NodeLink, Pace, node_failure, private_node, replay_recording
from tests.conftest import phantom_frames
from tests.recording.sessions import record_session
from tests.recording.test_reader import write_session


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("session")
    _, frames = phantom_frames(bands=24, height=60, width=80, count=10)
    tally = record_session(folder / "s.mcap", frames, folder)
    assert tally.frames_sent == 10 and tally.results == 10 and tally.refreshes == 4 and not tally.timeouts
    return folder / "s.mcap"


def replay(path: Path, run_dir: Path, overrides: dict | None = None) -> tuple[Comparison, object]:
    check = Comparison()
    with private_node(overrides or {}, run_dir) as node:
        recording = Recording(path)
        link = NodeLink(node.settings, ["cam0"], 20.0)
        try:
            assert link.ready(), node_failure(node)
            tally = replay_recording(recording, link, Pace(0.0), check)
        finally:
            link.close()
    return check, tally


def test_a_replay_reproduces_the_recorded_masks_exactly(session: Path, tmp_path: Path) -> None:
    check, tally = replay(session, tmp_path)
    assert tally.frames_sent == 10 and tally.refreshes == 4 and tally.extra_refreshes == 0  # type: ignore[attr-defined]
    assert not tally.timeouts and not tally.prompt_outcomes_differ  # type: ignore[attr-defined]
    summary = check.summary()
    assert set(summary["objects"]) == {"cam0/1", "cam0/2"}
    for name, obj in summary["objects"].items():
        assert obj["min_dice"] == 1.0, name
    assert summary["objects"]["cam0/1"]["results_compared"] == 12  # frames 2-9 and the 4 refreshes
    assert summary["passed"]
    recorded = [m for _, m in Recording(session).decoded(("masks",))]
    assert any(o.mask.any() for m in recorded for o in m.objects)  # there was something to reproduce


def test_a_changed_setting_changes_the_masks(session: Path, tmp_path: Path) -> None:
    check, _ = replay(session, tmp_path, {"worker": {"spectral": {"threshold_rad": 0.03}}})
    summary = check.summary()
    assert not summary["passed"] and summary["failing_objects"]
    assert min(o["min_dice"] for o in summary["objects"].values()) < 0.99


def test_frames_without_cubes_are_skipped_and_prompts_find_their_frame(tmp_path: Path) -> None:
    path = tmp_path / "hand.mcap"
    write_session(path)
    check, tally = replay(path, tmp_path / "run")
    t = tally  # the hand-written session: frame 3 has no cube; a click on frame 4, which had no result
    assert t.frames_without_cube == [3]  # type: ignore[attr-defined]
    assert t.frames_sent_for_prompts == 1 and t.frames_sent == 5  # type: ignore[attr-defined]
    assert t.prompts_sent == 3 and t.prompts_refused == 1  # type: ignore[attr-defined]
    # the recorded refused click (object 2 at a background pixel, negative first click) is refused again
    assert not t.prompt_outcomes_differ and not t.timeouts  # type: ignore[attr-defined]
    assert check.summary()["objects"]  # compared; the hand-made masks are not the engine's
    assert np.isfinite(check.summary()["objects"]["cam0/1"]["mean_dice"])


def test_a_capture_replays_with_a_click_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samsa_stream import cli

    _, frames = phantom_frames(bands=16, height=40, width=50, count=6)
    capture = tmp_path / "capture.npz"
    np.savez(capture, cubes=np.stack([f.cube for f in frames]), wavelengths_nm=frames[0].wavelengths_nm,
             labels=np.stack([f.labels for f in frames]), capture_ns=np.array([f.capture_ns for f in frames]))
    script = tmp_path / "clicks.toml"
    script.write_text("[[click]]\nframe = 1\nobject = 1\nobject_centre = 0\n\n"
                      "[[click]]\nframe = 3\nobject = 2\nx = 1\ny = 1\npositive = false\n\n"
                      "[[reset]]\nframe = 4\n")
    assert cli.main(["replay", str(capture), "--script", str(script), "--fast", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 6 and summary["results"] == 6 and summary["timeouts"] == 0
    assert summary["prompts"] == 3 and summary["prompts_refused"] == 1  # a first click must be positive
    assert summary["refreshes"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[click]]\nframe = 1\n")
    assert cli.main(["replay", str(capture), "--script", str(bad), "--fast"]) == 1
    assert "click #1: needs object" in capsys.readouterr().err


def test_step_mode_asks_before_each_frame_and_goes_on_when_stdin_closes() -> None:
    asked: list[str] = []

    def enter(text: str) -> str:
        asked.append(text)
        if len(asked) == 2:
            raise EOFError
        return ""

    pace = Pace(step=True, prompt=enter)
    pace.wait(10, "cam0 frame 0")
    pace.wait(20, "cam0 click", is_frame=False)  # prompts go out without asking
    pace.wait(30, "cam0 frame 1")
    pace.wait(40, "cam0 frame 2")  # stdin closed: no more questions
    assert asked == ["cam0 frame 0: press Enter to send ", "cam0 frame 1: press Enter to send "]


def test_a_running_node_is_fed_as_its_ingest_would_and_replays_twice_alike(
        session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samsa_stream import cli
    from samsa_stream.node import LocalNode

    with LocalNode({}, run_dir=tmp_path) as node:
        node.start("publisher")
        node.start("worker")
        endpoints = node.settings.endpoints
        sets = [a for n in ("frames", "prompts", "results", "broadcast")
                for a in ("--set", f"endpoints.{n}={getattr(endpoints, n)}")]
        for _ in range(2):  # the second run restarts the stream on a worker that has seen it
            assert cli.main(["replay", str(session), "--node", "existing", "--fast", "--check", "--quiet",
                             *sets]) == 0, capsys.readouterr().err
            summary = json.loads(capsys.readouterr().out)
            assert summary["node"] == "existing" and summary["timeouts"] == 0 and summary["check"]["passed"]
