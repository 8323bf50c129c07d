"""The bench report's schema, statistics and options: what every run's JSON must hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from samsa_stream.bench.options import BenchError, BenchOptions
from samsa_stream.bench.report import (
    REQUIRED_RATIOS,
    BenchReport,
    Section,
    gather_ratios,
    render_markdown,
    write_report,
)
from samsa_stream.bench.stats import interleaved, ratio, summarize


def _report(sections: dict[str, Section]) -> BenchReport:
    return BenchReport(command="samsa-stream bench", started="2026-11-30T00:00:00+00:00", duration_s=1.0,
                       machine={"cores": 2}, options={}, sections=sections, ratios=gather_ratios(sections))


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200))
def test_summary_percentiles_are_ordered_and_bounded(times: list[float]) -> None:
    t = summarize(times)
    assert min(times) - 1e-3 <= t.p50_ms <= t.p95_ms <= t.p99_ms <= t.max_ms <= max(times) + 1e-3
    assert t.n == len(times)


def test_summary_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no times"):
        summarize([])


def test_ratio_is_none_without_a_denominator() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(3.0, None) is None and ratio(None, 2.0) is None and ratio(1.0, 0.0) is None


def test_interleaved_times_every_case_the_same_number_of_times() -> None:
    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=4, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    assert calls.count("a") == calls.count("b") == 5
    assert calls[:4] == ["a", "b", "b", "a"]  # rotating order


def test_required_ratios_are_always_present_null_where_their_section_was_skipped() -> None:
    skipped = Section.skip("models", "no SAM2 model", ratios=("prompt_vs_predictor",))
    report = _report({"models": skipped, "compute": Section(title="c", ratios={"angles_vs_memcpy": 0.9})})
    assert set(REQUIRED_RATIOS) <= set(report.ratios)
    assert report.ratios["angles_vs_memcpy"] == 0.9 and report.ratios["prompt_vs_predictor"] is None


def test_a_report_missing_a_required_ratio_does_not_validate() -> None:
    data = _report({}).model_dump(mode="json")
    del data["ratios"]["angles_vs_memcpy"]
    with pytest.raises(ValidationError, match="angles_vs_memcpy"):
        BenchReport.model_validate(data)


def test_negative_times_and_unknown_fields_do_not_validate() -> None:
    good = {"p50_ms": 1, "p95_ms": 2, "p99_ms": 2, "max_ms": 3, "mean_ms": 1, "n": 3}
    Section.model_validate({"title": "t", "timings": {"x": good}})
    with pytest.raises(ValidationError):
        Section.model_validate({"title": "t", "timings": {"x": {**good, "p50_ms": -1}}})
    with pytest.raises(ValidationError):
        Section.model_validate({"title": "t", "typo": 1})


def test_written_report_round_trips_and_renders(tmp_path: Path) -> None:
    section = Section(title="Angles", timings={"memcpy": summarize([1.0, 2.0, 3.0])},
                      tables={"rows": [{"transport": "shm", "p50_ms": 4.5}, {"transport": "tcp", "p50_ms": None}]},
                      ratios={"angles_vs_memcpy": 1.1}, notes=["a note"])
    report = _report({"compute": section, "models": Section.skip("Models", "no SAM2 model")})
    json_path, md_path = write_report(report, tmp_path / "out")
    again = BenchReport.model_validate_json(json_path.read_text())
    assert again == report
    md = md_path.read_text()
    assert "## Angles (`compute`)" in md and "| shm | 4.5 |" in md and "Skipped: no SAM2 model" in md
    assert "a note" in md and md == render_markdown(report)
    assert json.loads(json_path.read_text())["schema_version"] == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": (8, 640, 100)}, "at least 16 x 16"),
    ({"sections": ("compute", "gpu")}, "unknown section"),
    ({"transports": ("udp",)}, "unknown transport"),
    ({"frames": 1}, "at least 2 frames"),
    ({"streams": (0,)}, "1 to 16"),
    ({"fps": (0.0,)}, "above 0"),
    ({"checkpoint": Path("x.pt"), "random_weights": True}, "exclude each other"),
])
def test_options_that_cannot_run_say_why(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError, match=message):
        BenchOptions(**kwargs)  # type: ignore[arg-type]


def test_worker_settings_carry_the_runs_model() -> None:
    options = BenchOptions(device="cpu", image_size=256, random_weights=True, seed=3)
    ws = options.worker_settings("prompt", "sam2.1_hiera_s")
    assert (ws.engine, ws.device, ws.image_size, ws.random_weights, ws.seed, ws.sam2_config) == (
        "prompt", "cpu", 256, True, 3, "sam2.1_hiera_s")
    assert np.isfinite(options.describe()["frames"])  # type: ignore[arg-type]
