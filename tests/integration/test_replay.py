"""End to end: record the demo's session, replay it through a fresh node and check every mask."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("samsa_stream.recording.recorder") is None,
                                reason="the recorder (samsa_stream.recording.recorder, `samsa-stream record`) "
                                       "is not part of this tree yet: nothing records the demo")


def samsa(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "samsa_stream", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    session = out / "session.mcap"
    proc = samsa("demo", "--frames", "30", "--out", str(out), "--record", str(session))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recording"] == str(session) and summary["exit_codes"]["record"] == 0
    return session


def test_the_recorded_demo_replays_exactly(demo_session: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = samsa("replay", str(demo_session), "--check", "--fast", "--report", str(report), "--quiet")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["frames"] > 0 and summary["prompts"] == 3 and summary["timeouts"] == 0
    assert summary["prompt_outcomes_differ"] == 0 and summary["ms_per_frame"] > 0
    objects = json.loads((report / "report.json").read_text())["objects"]
    assert set(objects) == {"cam0/1", "cam0/2"}
    for name, obj in objects.items():  # every object on every frame: DICE 1.0
        assert obj["min_dice"] == 1.0 and obj["results_compared"] > 5, name
    inspect = samsa("inspect", str(demo_session), "--json")
    assert inspect.returncode == 0, inspect.stderr
    cam = json.loads(inspect.stdout)["streams"]["cam0"]
    assert cam["prompts_ok"] == 3 and cam["objects"] == [1, 2]


def test_a_changed_threshold_fails_the_check_readably(demo_session: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = samsa("replay", str(demo_session), "--check", "--fast", "--report", str(report), "--quiet",
                 "--set", "worker.spectral.threshold_rad=0.03")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "check failed" in proc.stderr and "report.md" in proc.stderr
    written = json.loads((report / "report.json").read_text())
    assert not written["passed"] and written["failing_objects"]
    assert all(name in proc.stderr for name in written["failing_objects"])
    assert "FAILED" in (report / "report.md").read_text() and (report / "worst.png").stat().st_size > 0
