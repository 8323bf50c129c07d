"""The evaluation report: a summary computed from the rows alone, as JSON, a Markdown table and plots.

Everything in the summary is recomputable from ``report.json``'s rows (the tests do exactly that).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol.masks import rle_decode
from ..runtime import write_json_atomic
from .dataset import LabelledImage
from .metrics import clicks_to_reach, dice_drops, reached
from .sequence import RECOVERED_IOU, run_names, track_stats

DICE_AT = (1, 3, 5)  # the papers' columns: DICE after 1, 3 and 5 clicks
TARGETS = {"noc85": 0.85, "noc90": 0.90}
WORST_SHOWN = 6
BOOTSTRAP_SAMPLES = 2000  # resamples of the objects for the 95 % intervals (seeded: a report is reproducible)
BOOTSTRAP_SEED = 0


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def interval95(values: Sequence[float]) -> list[float] | None:
    """95 % bootstrap interval (percentile, resampling the objects) of the mean of ``values``: how far the
    mean DICE of another set of objects like these could lie. None for fewer than two objects."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    block = max(1, min(BOOTSTRAP_SAMPLES, (1 << 22) // data.size))  # bounded memory for large datasets
    means = np.concatenate([data[rng.integers(0, data.size, size=(min(block, BOOTSTRAP_SAMPLES - done), data.size))]
                            .mean(axis=1) for done in range(0, BOOTSTRAP_SAMPLES, block)])
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def method_stats(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """The figures of one method over ``rows`` (its object rows): mean DICE/IoU after k clicks, mean
    clicks to 85/90 % DICE (capped at the budget), how many never got there, how often a click
    lowered the DICE of its object, time per click and per-frame preparation time."""
    scored = [r for r in rows if r.get("dice")]
    stats: dict[str, Any] = {"objects": len(scored), "errors": len(rows) - len(scored)}
    ks = [k for k in DICE_AT if k <= budget]
    stats["dice_at"] = {str(k): _mean([r["dice"][k - 1] for r in scored]) for k in ks}
    stats["dice_at_ci95"] = {str(k): interval95([r["dice"][k - 1] for r in scored]) for k in ks}
    stats["iou_at"] = {str(k): _mean([r["iou"][k - 1] for r in scored]) for k in ks}
    for name, target in TARGETS.items():
        stats[name] = _mean([clicks_to_reach(r["dice"], target, budget) for r in scored])
        stats[f"failed_{name[3:]}"] = sum(not reached(r["dice"], target, budget) for r in scored)
    stats["dice_curve"] = [_mean([r["dice"][k] for r in scored]) for k in range(budget)] if scored else []
    lowered = later = 0
    for r in scored:
        placed = len(r["clicks"])
        a, b = dice_drops(r["dice"][:placed])
        lowered += a
        later += b
    stats["dice_lowered"] = {"clicks": lowered, "of": later, "rate": lowered / later if later else None}
    click_ms = [ms for r in scored for ms in r["click_ms"]]
    stats["click_ms"] = {"median": _median(click_ms),
                         "p95": float(np.percentile(click_ms, 95)) if click_ms else None}
    per_image = {r["image"]: r["prepare_ms"] for r in scored}
    stats["prepare_ms_median"] = _median(list(per_image.values()))
    return stats


def summarize(rows: list[dict[str, Any]], methods: Sequence[str], budget: int) -> dict[str, Any]:
    """Overall and per-class figures of every method, from the rows."""
    objects = [r for r in rows if r["kind"] == "object"]
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_class: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in objects:
        by_method[r["method"]].append(r)
        by_class[r["class_name"]][r["method"]].append(r)
    tracks = [r for r in rows if r["kind"] == "track"]
    tracking = {run: track_stats([r for r in tracks if r["method"] == run]) for run in run_names(methods)}
    return {
        "budget": budget,
        "sequences": sum(1 for r in rows if r["kind"] == "sequence"),
        "tracking": tracking if tracks else {},
        "images": sum(1 for r in rows if r["kind"] == "image"),
        "objects": len({(r["image"], r["object"]) for r in objects}),
        "image_errors": [{"image": r["image"], "error": r["error"]} for r in rows if r["kind"] == "image_error"],
        "methods": {m: method_stats(by_method[m], budget) for m in methods},
        "classes": {c: {m: method_stats(per[m], budget) for m in methods if per[m]}
                    for c, per in sorted(by_class.items())},
    }


def _cell(value: Any, digits: int = 3, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if percent:
        return f"{100 * value:.1f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    text = _cell(value, percent=True)
    return text if interval is None else f"{text} ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def _table(stats: dict[str, dict[str, Any]], budget: int) -> list[str]:
    ks = [k for k in DICE_AT if k <= budget]
    head = (["method", "objects"] + [f"DICE@{k} %" for k in ks]
            + ["NoC@85", "NoC@90", f">=85 % in {budget}", "clicks lowering DICE", "ms/click (median)",
               "prepare ms (median)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in stats.items():
        lowered = s["dice_lowered"]
        cells = ([method, f"{s['objects']}" + (f" ({s['errors']} failed)" if s["errors"] else "")]
                 + [_with_interval(s["dice_at"][str(k)], s["dice_at_ci95"][str(k)]) for k in ks]
                 + [_cell(s["noc85"], 2), _cell(s["noc90"], 2), f"{s['objects'] - s['failed_85']}/{s['objects']}",
                    f"{lowered['clicks']}/{lowered['of']}", _cell(s["click_ms"]["median"], 1),
                    _cell(s["prepare_ms_median"], 1)])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _tracking_table(tracking: dict[str, dict[str, Any]]) -> list[str]:
    head = ["run", "tracks", "frames in view", "IoU mean %", "IoU min %", "drift (IoU points)",
            "shown while away", "judged absent while away", "judged absent in view", "returns found again",
            "frames to find again (median)", "ms/frame (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run, t in tracking.items():
        drift = None if t["drift"] is None else 100 * t["drift"]
        cells = [run, str(t["tracks"]), str(t["frames_in_view"]), _cell(t["iou_mean"], percent=True),
                 _cell(t["iou_min"], percent=True), _cell(drift, 1), f"{t['shown_while_away']}/{t['frames_away']}",
                 f"{t.get('absent_while_away', 0)}/{t['frames_away']}",
                 f"{t.get('absent_in_view', 0)}/{t['frames_in_view']}", f"{t['recovered']}/{t['returns']}",
                 _cell(t["frames_to_recover_median"], 1), _cell(t["frame_ms_median"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any], config: dict[str, Any], notices: Sequence[str]) -> str:
    """``report.md``: what was measured, then one table overall and one per class."""
    dataset = config["dataset"]
    budget = summary["budget"]
    lines = [f"# Evaluation: {dataset.get('name', 'dataset')}", ""]
    for notice in notices:
        lines.append(f"> **{notice}**")
    if notices:
        lines.append("")
    rules = dataset.get("rules", {})
    if summary["tracking"]:
        counted = (f"- sequences: {summary['sequences']} (objects are label values, "
                   f"min area {rules.get('min_area_px', '?')} px)")
    else:
        counted = (f"- images: {summary['images']}, objects: {summary['objects']} "
                   f"(object mode {rules.get('objects', '?')}, min area {rules.get('min_area_px', '?')} px)")
    lines += [counted, f"- clicks per object: {budget}; protocol: docs/evaluation.md",
              f"- methods: {', '.join(config['methods'])}", ""]
    if summary["image_errors"]:
        lines.append(f"- images that could not be read: {len(summary['image_errors'])} (listed in report.json)")
        lines.append("")
    if summary["tracking"]:
        lines += ["## Tracking", "", *_tracking_table(summary["tracking"]), "",
                  f"Objects are clicked ({budget} simulated clicks) on the first frame they appear in, then followed "
                  "with no further click; IoU over the frames after that while in view. Drift: mean IoU of each "
                  "track's last quarter minus its first. 'no-memory' runs get a fresh memory every frame "
                  f"(re-found from their clicks). Found again: IoU >= {RECOVERED_IOU} after a return.", ""]
        return "\n".join(lines)
    lines += ["## All objects", "", *_table(summary["methods"], budget), ""]
    for name, stats in summary["classes"].items():
        lines += [f"## Class: {name}", "", *_table(stats, budget), ""]
    lines += ["DICE: mean over objects, with its 95 % bootstrap interval (objects resampled) in brackets.",
              "NoC@85/90: mean clicks to reach 85/90 % DICE, counting the budget for an object that never did.",
              "Clicks lowering DICE: placed clicks after the first that lowered their object's DICE.", ""]
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Mean DICE against clicks, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    clicks = np.arange(1, summary["budget"] + 1)
    for method, stats in summary["methods"].items():
        if stats["dice_curve"]:
            ax.plot(clicks, [100 * v for v in stats["dice_curve"]], marker="o", markersize=3, label=method)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean DICE (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max(2, summary["budget"]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tracking(rows: list[dict[str, Any]], runs: Sequence[str], path: Path) -> None:
    """Mean IoU against frames since the click, one curve per run (frames out of view left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for run in runs:
        series = [r["iou"] for r in rows if r["kind"] == "track" and r["method"] == run]
        length = max((len(s) for s in series), default=0)
        means = [np.mean(vals) if (vals := [s[k] for s in series if k < len(s) and s[k] is not None]) else np.nan
                 for k in range(length)]
        if length:
            ax.plot(np.arange(length), 100 * np.asarray(means, dtype=np.float64), label=run,
                    linestyle="--" if run.endswith("no-memory") else "-")
    ax.set_xlabel("frames since the click")
    ax.set_ylabel("mean IoU in view (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_worst(rows: list[dict[str, Any]], method: str, load: Callable[[int], LabelledImage], path: Path,
               count: int = WORST_SHOWN) -> int:
    """A strip of ``method``'s worst objects (lowest final DICE; among equals, the lowest mean DICE over
    the clicks, i.e. the slowest to get there): the pseudo-RGB, the ground truth's outline (white), the
    final mask (filled) and every click (green positive, red negative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["kind"] == "object" and r["method"] == method and r.get("dice")]
    worst = sorted(scored, key=lambda r: (round(r["dice"][-1], 6), float(np.mean(r["dice"])), r["image_index"],
                                          r["object_index"]))[:count]
    if not worst:
        return 0
    fig, axes = plt.subplots(1, len(worst), figsize=(2.6 * len(worst), 3.0), dpi=120, squeeze=False)
    for ax, row in zip(axes[0], worst, strict=True):
        image = load(row["image_index"])
        shape = (int(row["final_mask"]["shape"][0]), int(row["final_mask"]["shape"][1]))
        mask = rle_decode(np.asarray(row["final_mask"]["rle"], dtype=np.uint32), shape)
        ax.imshow(image.frame.rgb)
        ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
        truth = next((o.mask for o in image.objects if o.key == row["object"]), None)
        if truth is not None and truth.any() and not truth.all():
            ax.contour(truth.astype(np.float32), levels=[0.5], colors="white", linewidths=0.8)
        for r, c, positive in row["clicks"]:
            ax.plot(c, r, marker="o", markersize=4, color="lime" if positive else "red", markeredgecolor="black")
        ax.set_title(f"{row['image']} {row['object']}\nDICE {100 * row['dice'][0]:.0f}% at 1 click, "
                     f"{100 * row['dice'][-1]:.0f}% at {len(row['dice'])}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return len(worst)


def write_report(folder: Path, rows: list[dict[str, Any]], config: dict[str, Any], notices: Sequence[str],
                 ) -> dict[str, Any]:
    """``report.json`` (config, summary, rows) and ``report.md``; returns the summary."""
    summary = summarize(rows, config["methods"], config["budget"])
    write_json_atomic(folder / "report.json", {"config": config, "notices": list(notices), "summary": summary,
                                               "rows": rows})
    (folder / "report.md").write_text(markdown(summary, config, notices), encoding="utf-8")
    return summary
