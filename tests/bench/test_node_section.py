"""``bench`` sections ``node`` and ``node_streams`` on tiny phantom frames through the real processes:
every timing, table row and ratio is there, counted as measured, and the sections validate."""

from __future__ import annotations

import os

import pytest

from samsa_stream.bench import node
from samsa_stream.bench.node_run import STAGES, NodeCase, measure_node
from samsa_stream.bench.options import BenchError, BenchFrames, BenchOptions
from samsa_stream.bench.report import Section, gather_ratios
from samsa_stream.settings import PhantomSettings, Settings

TRANSPORTS = ("shm", "tcp")


@pytest.fixture(scope="module")
def sections() -> dict[str, Section]:
    options = BenchOptions(size=(32, 48, 8), frames=3, fps=(20.0,), transports=TRANSPORTS, streams=(1, 2), clicks=2,
                           sections=("node",))
    return node.run(options, BenchFrames.make(options.size, options.frames))


def test_both_sections_ran_and_validate(sections: dict[str, Section]) -> None:
    assert set(sections) == {"node", "node_streams"}
    for name, section in sections.items():
        assert section.skipped is None, (name, section.notes)
        assert Section.model_validate(section.model_dump(mode="json")) == section
        assert not [n for n in section.notes if "did not complete" in n or "fewer masks" in n], section.notes


def test_every_transport_has_every_stage_and_click_to_mask(sections: dict[str, Section]) -> None:
    timings = sections["node"].timings
    for transport in TRANSPORTS:
        label = f"{transport}@20fps"
        for stage, _, _ in STAGES:
            timing = timings[f"{label} {stage}"]
            assert timing.n == 3 and timing.p50_ms <= timing.p95_ms <= timing.max_ms
        # Each message's frame-to-screen time holds its worker time, so the medians keep that order.
        assert timings[f"{label} end to end"].p50_ms >= timings[f"{label} worker"].p50_ms > 0
        click = timings[f"{label} click to mask"]
        assert click.n == 2 and click.p50_ms > 0
        at_worker = timings[f"{label} click to worker out"]  # the same messages, when the worker sent them
        assert at_worker.n == 2 and 0 < at_worker.p50_ms <= click.p50_ms
    assert timings["in process worker"].n == 3 and timings["in process worker"].p50_ms > 0


def test_run_rows_count_what_each_process_did(sections: dict[str, Section]) -> None:
    node_section = sections["node"]
    runs = node_section.tables["runs"]
    assert [row["transport"] for row in runs] == list(TRANSPORTS)
    for row in runs:
        assert row["masks"] == 3 and row["masks/s"] > 0
        assert row["ingest frames captured"] >= 3 and row["worker frames processed"] >= 3
        assert row["publisher masks published"] >= 3
        assert all(row[f"{proc} MiB"] > 0 for proc in ("ingest", "worker", "publisher"))
    stages = {(row["transport"], row["stage"]) for row in node_section.tables["latency"]}
    assert stages == {(t, stage) for t in TRANSPORTS for stage, _, _ in STAGES}


def test_ratios_are_measured(sections: dict[str, Section]) -> None:
    ratios = gather_ratios(sections)
    assert ratios["worker_in_node_vs_in_process"] > 0
    assert ratios["end_to_end_vs_worker"] >= 1.0
    streams = sections["node_streams"]
    assert streams.ratios["streams_2_vs_1_worker_per_frame"] > 0
    assert streams.ratios["streams_2_vs_1_end_to_end"] > 0


def test_streams_rows_cover_every_camera(sections: dict[str, Section]) -> None:
    streams = sections["node_streams"]
    rows = {row["streams"]: row for row in streams.tables["streams"]}
    assert set(rows) == {1, 2}
    for count, row in rows.items():
        assert row["masks"] == 3 * count
        assert streams.timings[f"{count} streams worker"].n == 3 * count
        assert streams.timings[f"{count} streams end to end"].n == 3 * count
        assert row["masks/s total"] >= row["masks/s per stream (min)"] > 0
        assert row["ingest frames captured"] >= 3


def test_a_sam2_node_engine_without_a_model_is_skipped_saying_why() -> None:
    options = BenchOptions(size=(32, 48, 8), frames=2, node_engine="rgb")
    sections = node.run(options, BenchFrames.make(options.size, 2))
    assert sections["node"].skipped and "--checkpoint" in sections["node"].skipped
    assert sections["node"].ratios == {"worker_in_node_vs_in_process": None, "end_to_end_vs_worker": None}
    assert sections["node_streams"].skipped


def test_the_runs_own_settings_reach_the_node_but_not_its_endpoints() -> None:
    settings = Settings.model_validate({"worker": {"spectral": {"threshold_rad": 0.2}, "streams": ["cam0"]},
                                        "endpoints": {"frames": "tcp://127.0.0.1:1"}})
    carried = node.carried_settings(settings)
    assert carried == {"worker": {"spectral": {"threshold_rad": 0.2}, "streams": ["cam0"]}}  # lists travel as JSON


def test_a_node_whose_camera_cannot_start_is_stopped_and_says_which_process_ended() -> None:
    case = NodeCase("shm", 20.0, ("cam0",), 2, 0, PhantomSettings(height=32, width=48, bands=8),
                    {"engine": "spectral", "device": "cpu"}, carried={"ingest": {"source": "/nonexistent/cube.npy"}})
    before = _children()
    with pytest.raises(BenchError, match="ingest-cam0 ended"):
        measure_node(case)
    assert _children() == before  # every process of the node was stopped and reaped


def _children() -> set[int]:
    """Ids of this process's child processes (from /proc, which Linux CI has)."""
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                out.add(int(entry))
    return out
