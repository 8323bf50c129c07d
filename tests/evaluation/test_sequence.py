"""Tracking evaluation on labelled sequences (``eval --sequences``): the figures from hand-made rows,
and whole runs on the moving phantom and on a sequence whose object leaves the view and returns."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.evaluation.sequence import track_stats


def row(ious: list[float | None], shown: list[bool] | None = None) -> dict:
    shown = shown if shown is not None else [v is not None for v in ious]
    return {"iou": ious, "shown": shown, "frame_ms": [1.0] * len(ious)}


def test_track_figures_from_hand_made_rows() -> None:
    # The click frame (not counted), 8 frames in view, 2 away (one shows a mask), back at 0.3, found at 0.9.
    track = row([1.0, 0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, None, None, 0.3, 0.9],
                [True] * 9 + [False, True, True, True])
    t = track_stats([track])
    assert t["frames_in_view"] == 10 and t["frames_away"] == 2 and t["shown_while_away"] == 1
    assert t["absent_while_away"] == 1 and t["absent_in_view"] == 0  # presence defaults to 'a mask shown'
    judged = track_stats([{**track, "present": [True] * 9 + [False, False, False, True]}])
    assert judged["absent_while_away"] == 2 and judged["absent_in_view"] == 1
    assert t["returns"] == 1 and t["recovered"] == 1 and t["frames_to_recover_median"] == 1
    assert t["iou_min"] == pytest.approx(0.3)
    seen = [0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, 0.3, 0.9]
    assert t["iou_mean"] == pytest.approx(np.mean(seen))
    assert t["drift"] == pytest.approx(np.mean(seen[-2:]) - np.mean(seen[:2]))
    never = track_stats([row([1.0, 0.9, None, 0.1, 0.2])])
    assert never["returns"] == 1 and never["recovered"] == 0 and never["frames_to_recover_median"] is None
    twice = track_stats([row([1.0, None, 0.9, None, 0.8])])
    assert twice["returns"] == 2 and twice["recovered"] == 2


def eval_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["eval", *args, "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_spectral_engine_follows_every_phantom_object_on_every_frame(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "seq"
    assert main(["dataset", "phantom", "--out", str(data), "--count", "2", "--frames", "12", "--size", "64x80",
                 "--bands", "24"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    brief = eval_json(capsys, str(data), "--sequences", "--clicks", "1", "--out", str(out))
    assert brief["sequences"] == 2
    report = json.loads((out / "report.json").read_text())
    tracks = [r for r in report["rows"] if r["kind"] == "track"]
    runs = {r["method"] for r in tracks}
    assert runs == {"spectral", "spectral/no-memory", "angle-mapper", "angle-mapper/no-memory"}
    spectral = [r for r in tracks if r["method"] == "spectral"]
    assert len(spectral) == 4 and all(len(r["iou"]) == 12 and r["click_frame"] == 0 for r in spectral)
    assert min(v for r in spectral for v in r["iou"]) >= 0.8
    assert report["summary"]["tracking"]["spectral"]["iou_min"] >= 0.8
    assert "## Tracking" in (out / "report.md").read_text()
    assert cv2.imread(str(out / "iou_vs_frames.png")) is not None
    again = eval_json(capsys, str(data), "--sequences", "--clicks", "1", "--out", str(out))  # resumed: nothing to do
    assert again["tracking"] == brief["tracking"]


def test_an_object_that_leaves_and_returns_is_not_shown_while_away_and_is_found_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    wavelengths = np.linspace(450.0, 950.0, 30)
    background = 0.25 + 0.25 / (1 + np.exp(-(wavelengths - 650) / 30))
    target = 0.08 + 0.45 / (1 + np.exp(-(wavelengths - 560) / 30))
    frames, labels = [], []
    for k in range(14):
        cube = np.broadcast_to(background, (40, 48, 30)).astype(np.float32).copy()
        label = np.zeros((40, 48), np.int32)
        if not 5 <= k <= 8:  # away on frames 5-8, back where it left
            col = 10 + min(k, 5)
            cube[15:25, col:col + 10] = target
            label[15:25, col:col + 10] = 1
        frames.append(cube + rng.normal(0, 0.004, cube.shape).astype(np.float32))
        labels.append(label)
    data = tmp_path / "away"
    data.mkdir()
    np.savez(data / "case.npz", cubes=np.clip(np.stack(frames), 0.001, 1), wavelengths_nm=wavelengths,
             labels=np.stack(labels))
    out = tmp_path / "out"
    eval_json(capsys, str(data), "--sequences", "--clicks", "2", "--out", str(out), "--no-baselines")
    tracking = json.loads((out / "report.json").read_text())["summary"]["tracking"]
    for run in ("spectral", "spectral/no-memory"):
        t = tracking[run]
        assert t["frames_away"] == 4 and t["shown_while_away"] == 0, run
        assert t["absent_while_away"] == 4 and t["absent_in_view"] == 0, run  # reported absent, not just empty
        assert t["returns"] == 1 and t["recovered"] == 1 and t["frames_to_recover_median"] == 0, run
        assert t["iou_min"] >= 0.8, run


def test_sequences_refuse_components(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path), "--sequences", "--objects", "components", "--out", str(tmp_path / "o")]) == 1
    assert "no identity across frames" in capsys.readouterr().err
