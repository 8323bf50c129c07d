"""An evaluation run: every method on every object of every image, rows written as they finish.

Rows go to ``OUT/rows/rank-R.jsonl`` (one JSON object per line, flushed and synced one by one), so
a run that crashed resumes from the rows already written, and several ranks (torchrun) write side
by side; the leader merges them in dataset order. ``OUT/run.json`` holds what the run measures; a
rerun with other settings into the same folder is refused instead of mixing rows.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ingest.capture import SourceError
from ..parallel import Ranks
from ..protocol.masks import rle_encode
from ..runtime import shorten, write_json_atomic
from ..spectral.angles import SpectralError
from ..worker.engines import Engine, EngineError, FrameContext
from ..worker.prompts import PromptError
from . import EvaluationError
from .dataset import Dataset
from .sequence import evaluate_sequence, run_names, sequence_name, sequences_of
from .session import run_session

log = logging.getLogger(__name__)

ROWS_FORMAT = "samsa-stream/eval-rows"
# What one object's session can fail with on bad data; it is recorded and the run goes on.
OBJECT_ERRORS: tuple[type[Exception], ...] = (SpectralError, PromptError, EngineError, EvaluationError)
SEQUENCE_ERRORS: tuple[type[Exception], ...] = (SourceError, *OBJECT_ERRORS)  # a sequence is scored whole


@dataclass(frozen=True)
class EvalConfig:
    """What a run measures; two runs with equal configs produce comparable rows."""

    methods: tuple[str, ...]
    budget: int  # clicks per object
    dataset: dict[str, Any]  # Dataset.describe() of the images and object rules
    settings: dict[str, Any]  # the worker settings the methods ran with (JSON-ready)
    sequences: bool = False  # each multi-frame capture is a sequence to track through (evaluation.sequence)

    def to_json(self) -> dict[str, Any]:
        return {"format": ROWS_FORMAT, "version": 1, "methods": list(self.methods), "budget": self.budget,
                "dataset": self.dataset, "settings": self.settings, "sequences": self.sequences}

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """The top-level fields in which ``saved`` (a run.json) differs from this config."""
        mine = json.loads(json.dumps(self.to_json(), default=str))
        return sorted(k for k in set(mine) | set(saved) if mine.get(k) != saved.get(k))


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return (row["kind"], row["image"], row.get("method") or "", row.get("object") or "")


class RowStore:
    """The rows of one run folder; each rank appends to its own file."""

    def __init__(self, folder: Path, rank: int = 0) -> None:
        self.folder = folder / "rows"
        self.path = self.folder / f"rank-{rank}.jsonl"
        self._healed = False

    def prepare(self, config: EvalConfig, leader: bool) -> None:
        """Create the folder (leader) or check that it holds rows of this very run."""
        run_file = self.folder.parent / "run.json"
        if run_file.is_file():
            try:
                saved = json.loads(run_file.read_text())
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"{run_file} is not readable ({exc}); remove it or use another --out") from None
            changed = config.differences(saved if isinstance(saved, dict) else {})
            if changed:
                raise EvaluationError(f"{self.folder.parent} holds rows of another run (it differs in: "
                                      f"{', '.join(changed)}); use another --out, or --restart to discard them")
        elif leader:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, config.to_json())

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row of every rank's file; a torn last line (a crash mid-write) is skipped."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("rank-*.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(row, dict) and "kind" in row and "image" in row:
                        yield row

    def _heal(self) -> None:
        """Cut a torn last line (a crash mid-write) off this rank's file, so the next row starts a line."""
        self._healed = True
        try:
            with self.path.open("rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        except FileNotFoundError:
            pass

    def append(self, row: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._healed:
            self._heal()
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def merged(self) -> list[dict[str, Any]]:
        """Every rank's rows once each, in dataset order: image, then method, then object."""
        unique: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in self.rows():
            unique.setdefault(row_key(row), row)
        finished = {row["image"] for row in unique.values() if row["kind"] == "image"}
        rows = [r for r in unique.values() if not (r["kind"] == "image_error" and r["image"] in finished)]
        return sorted(rows, key=lambda r: (r.get("image_index", 0), r["kind"] != "image", r.get("method_index", 0),
                                           r.get("object_index", 0)))


def evaluate(dataset: Dataset, methods: dict[str, Engine], config: EvalConfig, store: RowStore, ranks: Ranks,
             reference_radius: int, progress: Callable[[Iterable[int], int], Iterable[int]] | None = None) -> int:
    """Run this rank's share of the images; returns how many object sessions it ran (resumed ones excluded)."""
    done = {row_key(r) for r in store.rows()}
    mine = [i for i in ranks.shard(range(len(dataset))) if ("image", dataset.entries[i].name, "", "") not in done]
    ran = 0
    for index in (progress(mine, len(mine)) if progress else mine):
        ran += _evaluate_image(dataset, index, methods, config, store, done, reference_radius)
    return ran


def _evaluate_image(dataset: Dataset, index: int, methods: dict[str, Engine], config: EvalConfig, store: RowStore,
                    done: set[tuple[str, ...]], reference_radius: int) -> int:
    name = dataset.entries[index].name
    try:
        image = dataset.load(index)
    except (SourceError, EvaluationError) as exc:
        log.warning("image %s skipped: %s", name, exc)
        store.append({"kind": "image_error", "image": name, "image_index": index, "error": shorten(str(exc), 500)})
        return 0
    frame = image.frame
    contexts: dict[object, tuple[FrameContext, float]] = {}
    ran = 0
    for m, (method, engine) in enumerate(methods.items()):
        todo = [(j, obj) for j, obj in enumerate(image.objects)
                if ("object", name, method, obj.key) not in done]
        if not todo:
            continue
        key = engine.context_key()
        if key not in contexts:
            started = time.perf_counter()
            contexts[key] = (engine.prepare(frame), (time.perf_counter() - started) * 1000)
        ctx, prepare_ms = contexts[key]
        for j, obj in todo:
            row: dict[str, Any] = {"kind": "object", "image": name, "image_index": index, "method": method,
                                   "method_index": m, "object": obj.key, "object_index": j,
                                   "class_value": obj.class_value, "class_name": obj.class_name, "area_px": obj.area,
                                   "prepare_ms": round(prepare_ms, 3)}
            try:
                result = run_session(engine, ctx, frame, obj.mask, config.budget, reference_radius, obj.class_name)
            except OBJECT_ERRORS as exc:
                row["error"] = shorten(f"{type(exc).__name__}: {exc}", 500)
            else:
                final = result.final_mask
                row.update({
                    "dice": [round(v, 6) for v in result.dice], "iou": [round(v, 6) for v in result.iou],
                    "clicks": [[c.row, c.col, int(c.positive)] for c in result.clicks],
                    "click_ms": [round(s * 1000, 3) for s in result.seconds],
                    "final_mask": None if final is None else {"shape": list(final.shape),
                                                              "rle": rle_encode(final).tolist()},
                })
            store.append(row)
            ran += 1
    for engine in methods.values():
        engine.forget(frame.stream_id)
    store.append({"kind": "image", "image": name, "image_index": index, "objects": len(image.objects),
                  "shape": list(frame.cube.shape)})
    return ran


def evaluate_sequences(dataset: Dataset, methods: dict[str, Engine], config: EvalConfig, store: RowStore,
                       ranks: Ranks, reference_radius: int,
                       progress: Callable[[Iterable[int], int], Iterable[int]] | None = None) -> int:
    """Run this rank's share of the sequences (evaluation.sequence); rows are written per finished
    sequence, so a resumed run starts again at the first unfinished one. Returns the tracks it ran."""
    done = {row_key(r) for r in store.rows()}
    groups = sequences_of(dataset)
    mine = [g for g in ranks.shard(range(len(groups)))
            if ("sequence", sequence_name(dataset, groups[g]), "", "") not in done]
    rules = dataset.rules
    names = run_names(list(methods))
    ran = 0
    for g in (progress(mine, len(mine)) if progress else mine):
        indices = groups[g]
        name = sequence_name(dataset, indices)
        loaders = [lambda i=i: dataset.load(i) for i in indices]
        try:
            tracks = evaluate_sequence(loaders, methods, config.budget, reference_radius, rules.min_area_px,
                                       rules.skip, dict(rules.classes))
        except SEQUENCE_ERRORS as exc:
            log.warning("sequence %s skipped: %s", name, exc)
            store.append({"kind": "image_error", "image": name, "image_index": indices[0],
                          "error": shorten(f"{type(exc).__name__}: {exc}", 500)})
            continue
        for m, run in enumerate(names):
            for track in tracks[run]:
                store.append(track.row(name, indices[0], run, m))
                ran += 1
        store.append({"kind": "sequence", "image": name, "image_index": indices[0], "frames": len(indices)})
    return ran
