"""``samsa-stream bench`` in CI size: every section reports and the JSON validates.

A real run of the command (processes, sockets, SAM2 with random weights at 256 px) on small frames
and few repeats; the figures are not checked (speed is never asserted in tests), only that each
section measured what it says and the report holds together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from samsa_stream.bench.report import REQUIRED_RATIOS, BenchReport


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "samsa_stream", "bench", "--device", "cpu", "--random-weights", "--image-size", "256",
           "--size", "48x64x12", "--frames", "3", "--transports", "shm,tcp", "--streams", "1,2", "--clicks", "2",
           "--contention", "1", "--out", str(out), "--log-level", "WARNING"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return done, out


def test_every_section_reports_and_the_json_validates(ci_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = ci_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    assert {"compute", "ingest", "models", "node", "node_streams"} <= set(report.sections)
    skipped = {name: s.skipped for name, s in report.sections.items() if s.skipped}
    assert not skipped
    for name, section in report.sections.items():
        assert section.timings or section.tables, name
        assert all(t.n >= 1 and t.p50_ms <= t.max_ms for t in section.timings.values()), name
    missing = [name for name in REQUIRED_RATIOS if report.ratios.get(name) is None]
    assert not missing
    assert all(v is None or v > 0 for v in report.ratios.values())
    printed = json.loads(done.stdout)
    assert printed["ratios"] == report.ratios and Path(printed["bench_json"]) == out / "bench.json"
    assert report.options["size"] == [48, 64, 12] and report.options["random_weights"] is True
    assert report.command.startswith("samsa-stream bench --device cpu")


def test_the_markdown_has_every_section(ci_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = ci_run
    assert done.returncode == 0, done.stderr[-3000:]
    md = (out / "bench.md").read_text()
    report = BenchReport.model_validate_json((out / "bench.json").read_text())
    for name, section in report.sections.items():
        assert f"## {section.title} (`{name}`)" in md
    assert "| angles_vs_memcpy |" in md


def test_models_without_weights_are_skipped_with_the_reason(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "samsa_stream", "bench", "--sections", "models", "--size", "32x32x8", "--frames", "2",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = BenchReport.model_validate_json((tmp_path / "bench.json").read_text())
    assert "--checkpoint" in (report.sections["models"].skipped or "")
    assert report.ratios["prompt_vs_predictor"] is None


@pytest.mark.parametrize(("flags", "message"), [
    (["--size", "480x640"], "is not HxWxB"),
    (["--sections", "compute,gpu"], "unknown section"),
    (["--fps", "fast"], "comma-separated list of numbers"),
    (["--device", "cuda"], "no CUDA device"),
])
def test_bad_flags_say_what_is_wrong(flags: list[str], message: str, tmp_path: Path) -> None:
    import torch

    if flags[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, "-m", "samsa_stream", "bench", *flags, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr
