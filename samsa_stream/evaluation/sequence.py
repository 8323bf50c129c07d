"""Tracking quality on labelled sequences (DESIGN sections 5 and 7).

A sequence is one multi-frame capture whose frames carry their own label maps (the phantom with
moving objects, a recorded case annotated frame by frame). An object is one label value. Each
object is clicked on the first frame it appears in (at least ``min_area_px`` pixels), with the
image protocol's simulated clicks; then the engine follows it on every later frame with no further
click, as a surgeon's display would, and every frame is scored against that frame's labels:
IoU while the object is in view, whether a mask is shown while it is out of view, and how soon it
is found again when it returns.

Each method runs twice: with its memory carried from frame to frame (how the worker tracks) and,
as the reference, with a fresh memory on every frame (the object re-found from its clicks alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..worker.engines import Engine, FrameContext, ObjectMemory
from ..worker.prompts import TrackedObject
from .dataset import Dataset, LabelledImage
from .metrics import iou
from .session import run_session

NO_MEMORY = "no-memory"  # suffix of a method run with a fresh memory on every frame
RECOVERED_IOU = 0.5  # a returning object counts as found again from the first frame at this IoU


def sequences_of(dataset: Dataset) -> list[list[int]]:
    """The dataset's images grouped into sequences: the captures of one file, in file order."""
    groups: dict[str, list[int]] = {}
    for i, entry in enumerate(dataset.entries):
        groups.setdefault(str(entry.path), []).append(i)
    return [sorted(g, key=lambda i: dataset.entries[i].index) for g in groups.values()]


def sequence_name(dataset: Dataset, indices: Sequence[int]) -> str:
    """The sequence's name: its first image's name without the ``#K`` capture number."""
    return dataset.entries[indices[0]].name.split("#", 1)[0]


@dataclass
class Track:
    """One object followed by one method through one sequence; lists run from the click frame on."""

    value: int
    name: str
    obj: TrackedObject
    memory: ObjectMemory
    click_frame: int = -1  # position in the sequence of the clicked frame; -1 until the object appears
    click_dice: list[float] = field(default_factory=list)
    iou: list[float | None] = field(default_factory=list)  # None where the object is out of view
    shown: list[bool] = field(default_factory=list)  # a non-empty mask was given
    present: list[bool] = field(default_factory=list)  # the engine judged the object in view
    frame_ms: list[float] = field(default_factory=list)

    def row(self, sequence: str, index: int, method: str, method_index: int) -> dict[str, Any]:
        return {"kind": "track", "image": sequence, "image_index": index, "method": method,
                "method_index": method_index, "object": f"c{self.value}", "object_index": self.value,
                "class_value": self.value, "class_name": self.name, "click_frame": self.click_frame,
                "click_dice": [round(v, 6) for v in self.click_dice],
                "iou": [None if v is None else round(v, 6) for v in self.iou], "shown": self.shown,
                "present": self.present,
                "frame_ms": [round(v, 3) for v in self.frame_ms]}


def evaluate_sequence(frames: Sequence[Callable[[], LabelledImage]], methods: dict[str, Engine], budget: int,
                      reference_radius: int, min_area_px: int, skip: frozenset[int],
                      classes: dict[int, str]) -> dict[str, list[Track]]:
    """Follow every object of one sequence with every method, with and without memory.

    ``frames`` load the sequence's images in order (one at a time: memory stays bounded). Returns the
    tracks per run name (``method`` and ``method/no-memory``)."""
    runs = [(name, engine, carry) for name, engine in methods.items() for carry in (True, False)]
    tracks: dict[str, dict[int, Track]] = {_run_name(n, c): {} for n, _, c in runs}
    for position, load in enumerate(frames):
        image = load()
        frame = image.frame
        values = [int(v) for v in np.unique(image.labels) if int(v) not in skip]
        contexts: dict[object, FrameContext] = {}
        for name, engine, carry in runs:
            key = engine.context_key()
            if key not in contexts:
                contexts[key] = engine.prepare(frame)
            ctx = contexts[key]
            mine = tracks[_run_name(name, carry)]
            for value in values:  # objects appear when first in view
                if value not in mine and np.count_nonzero(image.labels == value) >= min_area_px:
                    label = classes.get(value, f"class {value}")
                    mine[value] = Track(value, label, TrackedObject(1, label, (255, 255, 255)), ObjectMemory())
            for value, track in sorted(mine.items()):
                truth = image.labels == value
                started = time.perf_counter()
                if track.click_frame < 0:
                    session = run_session(engine, ctx, frame, truth, budget, reference_radius, track.name,
                                          obj=track.obj, memory=track.memory)
                    mask = session.final_mask if session.final_mask is not None else np.zeros_like(truth)
                    track.click_frame, track.click_dice = position, session.dice
                    present = bool(mask.any())
                else:
                    memory = track.memory if carry else ObjectMemory()
                    seg = engine.segment(ctx, track.obj, memory)
                    mask, present = np.asarray(seg.mask, dtype=bool), seg.present
                track.frame_ms.append((time.perf_counter() - started) * 1000)
                track.iou.append(iou(mask, truth) if truth.any() else None)
                track.shown.append(bool(mask.any()))
                track.present.append(bool(present))
        for engine in methods.values():
            engine.forget(frame.stream_id)
    return {run: list(per.values()) for run, per in tracks.items()}


def _run_name(method: str, carry: bool) -> str:
    return method if carry else f"{method}/{NO_MEMORY}"


def run_names(methods: Sequence[str]) -> list[str]:
    """The report's run names: each method with memory, then without."""
    return [_run_name(m, c) for m in methods for c in (True, False)]


def track_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Tracking figures of one run over its track rows (frames after the click frame):
    mean IoU while in view; drift (mean IoU of each track's last quarter minus its first quarter);
    frames out of view, how many of them showed a mask anyway and how many the engine judged the object
    absent on (and on how many frames in view it did so wrongly); returns after an absence and how
    many frames it took to find the object again (IoU >= RECOVERED_IOU); time per frame."""
    followed: list[float] = []
    drifts: list[float] = []
    away = shown_away = returns = recovered = absent_away = absent_in_view = 0
    to_recover: list[int] = []
    for r in rows:
        later = list(zip(r["iou"][1:], r["shown"][1:], strict=True))
        present = r.get("present", r["shown"])[1:]  # rows written before presence was recorded: shown
        absent_away += sum(v is None and not p for (v, _), p in zip(later, present, strict=True))
        absent_in_view += sum(v is not None and not p for (v, _), p in zip(later, present, strict=True))
        seen = [v for v, _ in later if v is not None]
        followed += seen
        if len(seen) >= 4:
            quarter = max(1, len(seen) // 4)
            drifts.append(float(np.mean(seen[-quarter:]) - np.mean(seen[:quarter])))
        state, waited = "tracking", 0  # tracking -> away (out of view) -> returned -> tracking (found again)
        for value, shown in later:
            if value is None:
                away += 1
                shown_away += int(shown)
                state = "away"
                continue
            if state == "away":
                returns += 1
                state, waited = "returned", 0
            if state == "returned":
                if value >= RECOVERED_IOU:
                    recovered += 1
                    to_recover.append(waited)
                    state = "tracking"
                else:
                    waited += 1
    frame_ms = [ms for r in rows for ms in r["frame_ms"][1:]]
    return {
        "tracks": len(rows),
        "frames_in_view": len(followed),
        "iou_mean": float(np.mean(followed)) if followed else None,
        "iou_min": float(np.min(followed)) if followed else None,
        "drift": float(np.mean(drifts)) if drifts else None,
        "frames_away": away, "shown_while_away": shown_away,
        "absent_while_away": absent_away, "absent_in_view": absent_in_view,
        "returns": returns, "recovered": recovered,
        "frames_to_recover_median": float(np.median(to_recover)) if to_recover else None,
        "frame_ms_median": float(np.median(frame_ms)) if frame_ms else None,
    }
