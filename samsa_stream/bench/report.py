"""What ``bench`` writes: the JSON schema (pydantic models) and the Markdown rendering of one run.

``bench.json`` holds, per section, timings (p50/p95/p99/max/mean ms and the count), other figures
(throughput, drops, memory) and ratios to the section's floor or peer; the top-level ``ratios`` map
gathers every section's ratios. A ratio whose section did not run is null, and the section says why
in ``skipped``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..runtime import write_bytes_atomic

SCHEMA_VERSION = 1

# The ratios every report carries (null where their section was skipped, which then says why).
REQUIRED_RATIOS = ("angles_vs_memcpy", "angles_vs_spy", "angles_contended_vs_alone", "worker_in_node_vs_in_process",
                   "rgb_vs_predictor", "prompt_vs_predictor", "decoder_vs_predictor", "end_to_end_vs_worker")


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    max_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    n: int = Field(ge=1)


Figure = float | int | str | bool | None


class Section(BaseModel):
    """One part of the run: what it measured, and its figures."""

    model_config = ConfigDict(extra="forbid")

    title: str
    description: str = ""
    timings: dict[str, Timing] = Field(default_factory=dict)
    figures: dict[str, Figure] = Field(default_factory=dict)
    ratios: dict[str, float | None] = Field(default_factory=dict)
    tables: dict[str, list[dict[str, Figure]]] = Field(default_factory=dict)  # rows of one kind (transports, streams)
    notes: list[str] = Field(default_factory=list)
    skipped: str | None = None  # why this section did not run

    @classmethod
    def skip(cls, title: str, why: str, ratios: tuple[str, ...] = ()) -> Section:
        return cls(title=title, skipped=why, ratios=dict.fromkeys(ratios))


class BenchReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    command: str
    started: str  # ISO 8601, UTC
    duration_s: float = Field(ge=0)
    machine: dict[str, Figure]
    options: dict[str, Any]
    sections: dict[str, Section]
    ratios: dict[str, float | None]

    @model_validator(mode="after")
    def _required_ratios(self) -> BenchReport:
        missing = [name for name in REQUIRED_RATIOS if name not in self.ratios]
        if missing:
            raise ValueError(f"ratios lack {', '.join(missing)}")
        return self


def gather_ratios(sections: dict[str, Section]) -> dict[str, float | None]:
    """Every section's ratios in one map (names are unique across sections); the required ones always present."""
    out: dict[str, float | None] = dict.fromkeys(REQUIRED_RATIOS)
    for section in sections.values():
        for name, value in section.ratios.items():
            if out.get(name) is None:
                out[name] = value
    return out


def write_report(report: BenchReport, folder: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into ``folder`` (made if missing); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "bench.json", folder / "bench.md"
    write_bytes_atomic(json_path, json.dumps(report.model_dump(mode="json"), indent=2).encode())
    write_bytes_atomic(md_path, render_markdown(report).encode())
    return json_path, md_path


def _cell(value: Figure) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_markdown(report: BenchReport) -> str:
    """The report as Markdown: the machine, the ratios, then each section's tables."""
    lines = [f"# samsa-stream bench, {report.started}", "", f"`{report.command}` ({report.duration_s:.0f} s)", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in report.machine.items()]
    lines += ["", "## Ratios", "", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in report.ratios.items()]
    for name, section in report.sections.items():
        lines += ["", f"## {section.title} (`{name}`)", ""]
        if section.description:
            lines += [section.description, ""]
        if section.skipped:
            lines += [f"Skipped: {section.skipped}", ""]
            continue
        if section.timings:
            lines += ["| case | p50 ms | p95 ms | p99 ms | max ms | n |", "|---|---|---|---|---|---|"]
            lines += [f"| {case} | {t.p50_ms:.2f} | {t.p95_ms:.2f} | {t.p99_ms:.2f} | {t.max_ms:.2f} | {t.n} |"
                      for case, t in section.timings.items()]
            lines.append("")
        for table, rows in section.tables.items():
            if not rows:
                continue
            columns = list(dict.fromkeys(key for row in rows for key in row))
            lines += [f"{table}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
            lines.append("")
        if section.figures:
            lines += [", ".join(f"{key} {_cell(value)}" for key, value in section.figures.items()), ""]
        if section.ratios:
            lines += [", ".join(f"{key} {_cell(value)}" for key, value in section.ratios.items()), ""]
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines).rstrip() + "\n"
