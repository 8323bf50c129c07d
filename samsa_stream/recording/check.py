"""``replay --check``: the replayed masks against the recorded ones, frame by frame and object by object.

DICE per object and result (1.0 when both masks are empty; an object missing on one side counts as
an empty mask there). A frame segmented twice (the refresh after a prompt) is compared per result,
in order. The report: ``report.json`` (per object: mean and min DICE, results compared, worst
frames), ``report.md`` (the same, to read) and ``worst.png`` (the worst frames, recorded next to
replayed masks over the frame's pseudo-RGB). The comparison is streamed: only the worst frames'
images are kept.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..protocol import MaskBroadcast
from ..runtime import write_json_atomic

DEFAULT_MIN_DICE = 0.99
WORST_KEPT = 6  # frames in worst.png and per object in the report
CHECK_FAILED = 3  # exit code of ``replay --check`` when the check fails


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A and B| / (|A| + |B|); 1.0 when both are empty."""
    a, b = a.astype(bool, copy=False), b.astype(bool, copy=False)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def object_masks(message: MaskBroadcast | None, size: tuple[int, int]) -> dict[int, np.ndarray]:
    return {} if message is None else {o.object_id: o.mask for o in message.objects}


@dataclass(order=True)
class _Worst:
    neg_dice: float  # heap of the worst kept: the least bad on top
    order: int
    stream: str = field(compare=False)
    frame_id: int = field(compare=False)
    result: int = field(compare=False)
    scores: dict[int, float] = field(compare=False)
    rgb: np.ndarray = field(compare=False)
    recorded: dict[int, np.ndarray] = field(compare=False)
    replayed: dict[int, np.ndarray] = field(compare=False)
    colours: dict[int, tuple[int, int, int]] = field(compare=False)


@dataclass
class ObjectScore:
    scores: list[float] = field(default_factory=list)
    worst: list[tuple[float, int, int]] = field(default_factory=list)  # (dice, frame id, result) worst first

    def add(self, value: float, frame_id: int, result: int) -> None:
        self.scores.append(value)
        self.worst = sorted([*self.worst, (value, frame_id, result)])[:WORST_KEPT]

    def summary(self) -> dict[str, Any]:
        return {"mean_dice": round(float(np.mean(self.scores)), 6), "min_dice": round(float(np.min(self.scores)), 6),
                "results_compared": len(self.scores),
                "worst": [{"frame_id": f, "result": r, "dice": round(d, 6)} for d, f, r in self.worst if d < 1.0]}


class Comparison:
    """Collects DICE scores as the replay goes; ``report`` writes the files and says whether it passed."""

    def __init__(self, min_dice: float = DEFAULT_MIN_DICE) -> None:
        if not 0 <= min_dice <= 1:
            raise ValueError(f"min DICE must be within 0..1, got {min_dice}")
        self.min_dice = min_dice
        self.objects: dict[tuple[str, int], ObjectScore] = {}
        self.missing: list[dict[str, Any]] = []  # recorded results the replay did not produce
        self._worst: list[_Worst] = []
        self._order = itertools.count()

    def add(self, stream: str, frame_id: int, result: int, recorded: MaskBroadcast, replayed: MaskBroadcast | None,
            rgb: np.ndarray | None) -> dict[int, float]:
        """Compare one recorded result with its replay (None: it never came); the DICE per object."""
        if replayed is None:
            self.missing.append({"stream": stream, "frame_id": frame_id, "result": result})
            return {}
        rec, rep = object_masks(recorded, recorded.size), object_masks(replayed, replayed.size)
        size = recorded.size
        empty = np.zeros(size, bool)
        scores: dict[int, float] = {}
        for oid in sorted(set(rec) | set(rep)):
            a, b = rec.get(oid, empty), rep.get(oid, empty)
            value = dice(a, b) if a.shape == b.shape else 0.0
            scores[oid] = value
            self.objects.setdefault((stream, oid), ObjectScore()).add(value, frame_id, result)
        if scores:
            colours = {o.object_id: o.colour for o in [*replayed.objects, *recorded.objects]}
            self._keep(stream, frame_id, result, scores, rgb, rec, rep, colours)
        return scores

    def _keep(self, stream: str, frame_id: int, result: int, scores: dict[int, float], rgb: np.ndarray | None,
              rec: dict[int, np.ndarray], rep: dict[int, np.ndarray], colours: dict[int, tuple[int, int, int]]) -> None:
        worst = min(scores.values())
        if len(self._worst) >= WORST_KEPT and -self._worst[0].neg_dice <= worst:
            return  # better than every frame kept
        shape = next(iter(rec.values()), next(iter(rep.values()), np.zeros((1, 1), bool))).shape
        image = rgb if rgb is not None and rgb.shape[:2] == shape else np.full((*shape, 3), 64, np.uint8)
        item = _Worst(-worst, -next(self._order), stream, frame_id, result, scores, image, rec, rep, colours)
        if len(self._worst) >= WORST_KEPT:
            heapq.heapreplace(self._worst, item)
        else:
            heapq.heappush(self._worst, item)

    def failing(self) -> list[str]:
        """``stream/object`` of every object whose mean DICE is below the minimum."""
        return [f"{s}/{o}" for (s, o), score in sorted(self.objects.items()) if np.mean(score.scores) < self.min_dice]

    def passed(self) -> bool:
        return not self.failing() and not self.missing

    def summary(self) -> dict[str, Any]:
        return {"passed": self.passed(), "min_dice": self.min_dice,
                "objects": {f"{s}/{o}": score.summary() for (s, o), score in sorted(self.objects.items())},
                "failing_objects": self.failing(), "results_missing": len(self.missing)}

    def report(self, folder: Path, about: dict[str, Any]) -> dict[str, Any]:
        """Write report.json, report.md and worst.png into ``folder``; returns the JSON report."""
        folder.mkdir(parents=True, exist_ok=True)
        report = {**about, **self.summary(), "missing": self.missing[:100]}
        write_json_atomic(folder / "report.json", report)
        (folder / "report.md").write_text(markdown(report))
        worst = sorted(self._worst, key=lambda w: (-w.neg_dice, -w.order))
        if worst:
            cv2.imwrite(str(folder / "worst.png"), cv2.cvtColor(worst_strip(worst), cv2.COLOR_RGB2BGR))
        return report


def markdown(report: dict[str, Any]) -> str:
    """The report, readable."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [f"# Replay check: {verdict}", "", f"Recording: `{report.get('recording', '')}`  ",
             f"Minimum mean DICE per object: {report['min_dice']}  "]
    if report.get("settings"):
        lines.append("Changed settings: " + ", ".join(f"`{s}`" for s in report["settings"]) + "  ")
    replay = report.get("replay", {})
    if replay:
        lines.append(f"Frames replayed: {replay.get('frames', 0)}, results compared: "
                     f"{sum(o['results_compared'] for o in report['objects'].values())}, missing: "
                     f"{report['results_missing']}, frames without a recorded cube (skipped): "
                     f"{replay.get('frames_without_cube', 0)}  ")
    lines += ["", "| object | mean DICE | min DICE | results | worst frames (DICE) | |", "|---|---|---|---|---|---|"]
    for name, obj in report["objects"].items():
        worst = ", ".join(f"{w['frame_id']}{' after a prompt' * min(1, w['result'])} ({w['dice']:.3f})"
                          for w in obj["worst"]) or "none"
        mark = "below minimum" if name in report["failing_objects"] else "ok"
        lines.append(f"| {name} | {obj['mean_dice']:.4f} | {obj['min_dice']:.4f} | {obj['results_compared']} | "
                     f"{worst} | {mark} |")
    if not report["objects"]:
        lines.append("| (no objects in the recording) | | | | | |")
    if report["failing_objects"]:
        lines += ["", "Objects below the minimum: " + ", ".join(report["failing_objects"]) + "."]
    if report["results_missing"]:
        lines += ["", f"{report['results_missing']} recorded result(s) had no replayed result (timed out): " +
                  ", ".join(f"{m['stream']} frame {m['frame_id']}" for m in report["missing"][:10])]
    lines += ["", "`worst.png`: the worst frames, each as recorded masks (left) and replayed masks (right) over "
              "the frame's pseudo-RGB; pixels where they differ are magenta on the right.", ""]
    return "\n".join(lines)


def _draw(rgb: np.ndarray, masks: dict[int, np.ndarray], colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    for oid, mask in masks.items():
        colour = np.array(colours.get(oid, (255, 0, 0)), np.float32)
        out[mask] = 0.5 * out[mask] + 0.5 * colour
    image = out.astype(np.uint8)
    for oid, mask in masks.items():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, tuple(int(c) for c in colours.get(oid, (255, 0, 0))), 1)
    return image


def _labelled(image: np.ndarray, text: str, height: int) -> np.ndarray:
    scale = max(1, int(np.ceil(height / image.shape[0])))
    big = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    band = np.full((18, big.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, big])


def worst_strip(worst: list[_Worst], height: int = 160) -> np.ndarray:
    """The worst frames side by side: for each, recorded | replayed, labelled with stream, frame and DICE."""
    tiles = []
    for w in worst:
        scores = " ".join(f"#{o}:{d:.3f}" for o, d in sorted(w.scores.items()))
        rec = _labelled(_draw(w.rgb, w.recorded, w.colours), f"{w.stream} f{w.frame_id} recorded", height)
        replayed = _draw(w.rgb, w.replayed, w.colours)
        empty = np.zeros(w.rgb.shape[:2], bool)
        for oid in set(w.recorded) | set(w.replayed):
            differ = w.recorded.get(oid, empty) != w.replayed.get(oid, empty)
            replayed[differ] = (255, 0, 255)
        rep = _labelled(replayed, f"replayed {scores}", height)
        pair = np.hstack([rec, np.full((rec.shape[0], 2, 3), 255, np.uint8), rep])
        tiles.append(pair)
    tall = max(t.shape[0] for t in tiles)
    tiles = [np.vstack([t, np.full((tall - t.shape[0], t.shape[1], 3), 255, np.uint8)]) for t in tiles]
    gap = np.zeros((tall, 6, 3), np.uint8)
    return np.hstack([x for t in tiles for x in (t, gap)][:-1])


def load_report(folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return result


__all__ = ["CHECK_FAILED", "DEFAULT_MIN_DICE", "Comparison", "dice", "load_report", "markdown", "worst_strip"]
