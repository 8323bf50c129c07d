"""The one-command demo, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_demo_writes_summary_and_overlays(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "samsa_stream", "demo", "--frames", "30", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_captured"] == 30
    assert 0 < summary["frames_processed"] <= 30
    assert summary["frames_dropped"] == summary["frames_captured"] - summary["frames_processed"]
    assert summary["masks_published"] > 0 and summary["engine"] == "spectral"
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert [c["action"] for c in summary["clicks"]] == ["object 1 positive", "object 1 negative", "object 2 positive"]
    assert all(c["ok"] for c in summary["clicks"])
    assert summary["iou_vs_phantom"]["1"]["min"] >= 0.8 and summary["iou_vs_phantom"]["2"]["min"] >= 0.8
    assert summary["overlay_pngs"] > 0 and any(out.glob("view/overlay_*.png"))
    assert (out / "view" / "masks.jsonl").read_text().count("\n") > 0
    assert set(summary["exit_codes"].values()) == {0}


def test_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "samsa_stream", "demo", "--frames", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "--frames must be at least 1" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "samsa_stream", "demo", "--out", str(tmp_path), "--fps", "-3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "ingest.fps" in proc.stderr


def test_the_demo_merges_settings_as_every_command_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from samsa_stream import cli, demo
    from samsa_stream.settings import load_settings

    passed: dict = {}

    def run_demo(frames: int, out: Path, overrides: dict, **kwargs: object) -> dict:
        passed.update(overrides)
        return dict.fromkeys(("frames_captured", "frames_processed", "frames_dropped", "masks_published", "engine",
                              "latency_ms", "iou_vs_phantom", "wall_time_s"), 0)

    monkeypatch.setattr(demo, "run_demo", run_demo)
    for argv, fps in ((["--set", "ingest.fps=1", "--set", "ingest.fps=2"], 2.0),  # the last --set wins
                      (["--fps", "3", "--set", "ingest.fps=4"], 3.0)):  # a flag wins over --set
        passed.clear()
        args = cli.build_parser().parse_args(["demo", "--out", str(tmp_path), *argv])
        assert cli.settings_from(args).ingest.fps == fps
        assert args.handler(args) == 0
        assert load_settings(None, passed).ingest.fps == fps
