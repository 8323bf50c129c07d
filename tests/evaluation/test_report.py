"""The report's summary is what its rows say: recomputed here from report.json alone, in plain Python."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.evaluation.dataset import open_dataset
from samsa_stream.evaluation.report import markdown, summarize
from samsa_stream.protocol.masks import rle_decode
from samsa_stream.settings import load_settings

BUDGET = 5


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An evaluation of hard scenes (small targets, near look-alikes): objects that fail, sessions that
    stop early and clicks that lower the DICE, so every figure of the summary has something to count."""
    root = tmp_path_factory.mktemp("report")
    assert main(["dataset", "tiny", "--out", str(root / "data"), "--count", "3", "--size", "48x48",
                 "--bands", "16"]) == 0
    out = root / "out"
    assert main(["eval", str(root / "data" / "manifest.json"), "--objects", "components", "--engine", "spectral",
                 "--clicks", str(BUDGET), "--out", str(out), "--quiet"]) == 0
    return root / "data" / "manifest.json", json.loads((out / "report.json").read_text())


def first_reach(dice: list[float], target: float, budget: int) -> int:
    for k in range(budget):
        if dice[k] >= target:
            return k + 1
    return budget


def expected_stats(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """One method's figures over its object rows, computed without the report module."""
    scored = [r for r in rows if r.get("dice")]
    n = len(scored)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    ks = [k for k in (1, 3, 5) if k <= budget]
    lowered = sum(1 for r in scored for a, b in zip(r["dice"][:len(r["clicks"])], r["dice"][1:len(r["clicks"])],
                                                     strict=False) if b < a - 1e-9)
    later = sum(len(r["clicks"]) - 1 for r in scored)
    prepare = {r["image"]: r["prepare_ms"] for r in scored}
    click_ms = [ms for r in scored for ms in r["click_ms"]]
    return {
        "objects": n, "errors": len(rows) - n,
        "dice_at": {str(k): mean([r["dice"][k - 1] for r in scored]) for k in ks},
        "iou_at": {str(k): mean([r["iou"][k - 1] for r in scored]) for k in ks},
        "noc85": mean([first_reach(r["dice"], 0.85, budget) for r in scored]),
        "noc90": mean([first_reach(r["dice"], 0.90, budget) for r in scored]),
        "failed_85": sum(1 for r in scored if max(r["dice"][:budget]) < 0.85),
        "failed_90": sum(1 for r in scored if max(r["dice"][:budget]) < 0.90),
        "dice_curve": [mean([r["dice"][k] for r in scored]) for k in range(budget)] if scored else [],
        "dice_lowered": {"clicks": lowered, "of": later, "rate": lowered / later if later else None},
        "click_ms": {"median": statistics.median(click_ms) if click_ms else None},
        "prepare_ms_median": statistics.median(prepare.values()) if prepare else None,
    }


def assert_stats_match(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            for sub, figure in value.items():
                assert actual[key][sub] == pytest.approx(figure), f"{where} {key}.{sub}"
        else:
            assert actual[key] == pytest.approx(value), f"{where} {key}"


def test_summary_is_recomputable_from_the_rows(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    _, report = tiny_run
    rows, summary, config = report["rows"], report["summary"], report["config"]
    methods, budget = config["methods"], config["budget"]
    assert methods == ["spectral", "angle-mapper"] and budget == summary["budget"] == BUDGET
    objects = [r for r in rows if r["kind"] == "object"]
    images = [r for r in rows if r["kind"] == "image"]

    assert summary["images"] == len(images) == 3
    assert summary["objects"] == len({(r["image"], r["object"]) for r in objects}) == sum(r["objects"] for r in images)
    assert summary["image_errors"] == []
    assert set(summary["methods"]) == set(methods)
    for method in methods:
        mine = [r for r in objects if r["method"] == method]
        assert len(mine) == summary["objects"]  # every method on every object
        assert_stats_match(summary["methods"][method], expected_stats(mine, budget), method)

    by_class: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in objects:
        by_class[r["class_name"]][r["method"]].append(r)
    assert list(summary["classes"]) == sorted(by_class)
    for name, per_method in by_class.items():
        assert set(summary["classes"][name]) == set(per_method)
        for method, mine in per_method.items():
            assert summary["classes"][name][method]["objects"] == len(mine)
            assert_stats_match(summary["classes"][name][method], expected_stats(mine, budget), f"{name}/{method}")

    # The run is a real test of the counting: some objects fail, some sessions stop early, some clicks hurt.
    figures = summary["methods"]
    assert sum(s["failed_90"] for s in figures.values()) > 0
    assert sum(s["dice_lowered"]["clicks"] for s in figures.values()) > 0
    assert any(len(r["clicks"]) < budget for r in objects) and any(len(r["clicks"]) == budget for r in objects)


def test_rows_describe_what_the_sessions_did(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    manifest, report = tiny_run
    dataset = open_dataset(manifest, load_settings(), mode="components")
    truths = {(dataset.entries[i].name, o.key): o for i in range(len(dataset)) for o in dataset.load(i).objects}
    objects = [r for r in report["rows"] if r["kind"] == "object"]
    assert {(r["image"], r["object"]) for r in objects} == set(truths)
    for r in objects:
        truth = truths[(r["image"], r["object"])]
        assert r["class_value"] == truth.class_value and r["class_name"] == truth.class_name
        assert r["area_px"] == truth.area
        mask = rle_decode(np.asarray(r["final_mask"]["rle"], dtype=np.uint32), tuple(r["final_mask"]["shape"]))
        both = int((mask & truth.mask).sum())
        placed = len(r["clicks"])
        assert r["dice"][placed - 1] == pytest.approx(2 * both / (int(mask.sum()) + truth.area), abs=1e-6)
        assert r["iou"][placed - 1] == pytest.approx(both / int((mask | truth.mask).sum()), abs=1e-6)
        assert r["dice"][placed:] == [r["dice"][placed - 1]] * (len(r["dice"]) - placed)
        row, col, positive = r["clicks"][0]
        assert positive == 1 and truth.mask[row, col]


def test_errors_and_unread_images_are_counted_apart() -> None:
    rows = [
        {"kind": "image", "image": "a", "image_index": 0, "objects": 2, "shape": [8, 8, 4]},
        {"kind": "object", "image": "a", "method": "m", "object": "c1", "class_name": "x", "prepare_ms": 2.0,
         "dice": [0.5, 0.95, 0.95], "iou": [0.4, 0.9, 0.9], "clicks": [[1, 1, 1], [2, 2, 1]], "click_ms": [1.0, 3.0]},
        {"kind": "object", "image": "a", "method": "m", "object": "c2", "class_name": "y", "prepare_ms": 2.0,
         "error": "SpectralError: zero spectrum"},
        {"kind": "image_error", "image": "b", "image_index": 1, "error": "b: cannot be read"},
    ]
    summary = summarize(rows, ["m", "unused"], 3)
    assert summary["images"] == 1 and summary["objects"] == 2
    assert summary["image_errors"] == [{"image": "b", "error": "b: cannot be read"}]
    m = summary["methods"]["m"]
    assert (m["objects"], m["errors"]) == (1, 1)
    assert m["dice_at"] == {"1": 0.5, "3": 0.95} and m["noc85"] == 2 and m["noc90"] == 2
    assert (m["failed_85"], m["failed_90"]) == (0, 0)
    assert m["dice_curve"] == [0.5, 0.95, 0.95]
    assert m["dice_lowered"] == {"clicks": 0, "of": 1, "rate": 0.0}
    assert m["click_ms"]["median"] == 2.0 and m["prepare_ms_median"] == 2.0
    unused = summary["methods"]["unused"]
    assert unused["objects"] == 0 and unused["dice_at"] == {"1": None, "3": None} and unused["noc85"] is None
    assert set(summary["classes"]) == {"x", "y"} and set(summary["classes"]["y"]) == {"m"}
    assert summary["classes"]["y"]["m"]["errors"] == 1

    text = markdown(summary, {"dataset": {"name": "hand"}, "methods": ["m", "unused"]}, ["a notice"])
    assert "# Evaluation: hand" in text and "> **a notice**" in text
    assert "| m | 1 (1 failed) | 50.0 | 95.0 | 2.00 | 2.00 | 1/1 | 0/1 |" in text
    assert "| unused | 0 | - | - | - | - |" in text
    assert "## Class: x" in text and "## Class: y" in text
    assert "could not be read: 1" in text


def test_the_dice_interval_is_a_reproducible_bootstrap_of_the_objects() -> None:
    from samsa_stream.evaluation.report import interval95

    values = [0.2, 0.9, 0.95, 0.5, 0.7, 0.85, 0.99, 0.1]
    low, high = interval95(values)
    assert low < sum(values) / len(values) < high
    assert min(values) <= low and high <= max(values)
    assert interval95(values) == [low, high]  # seeded
    assert interval95([0.5] * 5) == [0.5, 0.5]
    assert interval95([0.5]) is None
    wider = interval95(values[:4])
    assert wider is not None and wider[1] - wider[0] > high - low  # fewer objects, wider interval
