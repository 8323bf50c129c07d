"""``replay --check``: DICE per object and result, the report files, and the exit code of a failed check."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samsa_stream import cli
from samsa_stream.protocol import MaskBroadcast, ObjectMask
from samsa_stream.recording.check import CHECK_FAILED, Comparison, dice
from tests.conftest import phantom_frames
from tests.recording.sessions import record_session

masks = arrays(bool, (6, 7))


@given(masks, masks)
def test_dice_is_symmetric_bounded_and_one_only_for_equal_masks(a: np.ndarray, b: np.ndarray) -> None:
    value = dice(a, b)
    assert value == dice(b, a) and 0.0 <= value <= 1.0
    assert (value == 1.0) == bool(np.array_equal(a, b))


def test_dice_of_two_empty_masks_is_one_and_of_disjoint_masks_zero() -> None:
    empty = np.zeros((4, 4), bool)
    left, right = empty.copy(), empty.copy()
    left[:, :2], right[:, 2:] = True, True
    assert dice(empty, empty) == 1.0 and dice(left, right) == 0.0 and dice(left, empty) == 0.0
    half = left.copy()
    half[:2] = False
    assert dice(left, half) == pytest.approx(2 * 4 / (8 + 4))


def _message(frame_id: int, objects: dict[int, np.ndarray]) -> MaskBroadcast:
    return MaskBroadcast("cam0", frame_id, 0, (4, 4), [ObjectMask(o, "", (0, 255, 0), m, 1.0)
                                                        for o, m in objects.items()], "spectral")


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_an_object_missing_on_one_side_counts_as_an_empty_mask(_: list[float]) -> None:
    full = np.ones((4, 4), bool)
    check = Comparison(0.99)
    assert check.add("cam0", 1, 0, _message(1, {1: full}), _message(1, {}), None) == {1: 0.0}
    assert check.add("cam0", 2, 0, _message(2, {}), _message(2, {2: np.zeros((4, 4), bool)}), None) == {2: 1.0}
    assert check.failing() == ["cam0/1"] and not check.passed()


def test_a_missing_result_fails_the_check(tmp_path: Path) -> None:
    check = Comparison(0.5)
    check.add("cam0", 3, 0, _message(3, {1: np.ones((4, 4), bool)}), None, None)
    report = check.report(tmp_path, {"recording": "x.mcap"})
    assert not report["passed"] and report["results_missing"] == 1 and not report["failing_objects"]
    assert "had no replayed result" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("session")
    _, frames = phantom_frames(bands=24, height=60, width=80, count=8)
    record_session(folder / "s.mcap", frames, folder)
    return folder / "s.mcap"


def test_check_passes_on_an_unchanged_node(session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    assert cli.main(["replay", str(session), "--fast", "--check", "--report", str(report), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 8 and summary["seconds"] > 0 and summary["ms_per_frame"] > 0
    assert summary["check"]["passed"] and summary["timeouts"] == 0
    written = json.loads((report / "report.json").read_text())
    assert {o["min_dice"] for o in written["objects"].values()} == {1.0}
    assert set(written["objects"]) == {"cam0/1", "cam0/2"}
    assert "PASSED" in (report / "report.md").read_text()


def test_check_fails_readably_when_a_setting_changes(session: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    code = cli.main(["replay", str(session), "--fast", "--check", "--report", str(report), "--quiet",
                     "--set", "worker.spectral.threshold_rad=0.03"])
    err = capsys.readouterr().err
    assert code == CHECK_FAILED
    assert "check failed" in err and "cam0/1" in err and str(report / "report.md") in err
    written = json.loads((report / "report.json").read_text())
    assert not written["passed"] and written["settings"] == ["worker.spectral.threshold_rad=0.03"]
    worst = written["objects"][written["failing_objects"][0]]["worst"]
    assert worst and worst[0]["dice"] < 0.99
    text = (report / "report.md").read_text()
    assert "FAILED" in text and "below minimum" in text and "worker.spectral.threshold_rad=0.03" in text
    strip = cv2.imread(str(report / "worst.png"))
    assert strip is not None and strip.shape[0] >= 160 and strip.shape[1] > 2 * 160
    assert (report / "worker.log").exists()


def test_replay_refuses_what_it_cannot_do(session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", str(tmp_path / "absent.mcap")]) == 1
    assert "no such file" in capsys.readouterr().err
    folder = tmp_path / "capture"
    folder.mkdir()
    assert cli.main(["replay", str(folder), "--check"]) == 1
    assert "is a capture, not a .mcap recording" in capsys.readouterr().err
    assert cli.main(["replay", str(session), "--report", str(tmp_path)]) == 1
    assert "--report needs --check" in capsys.readouterr().err
    assert cli.main(["replay", str(session), "--node", "existing", "--engine", "rgb"]) == 1
    assert "private node" in capsys.readouterr().err
