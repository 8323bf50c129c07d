"""``eval`` on labelled data in the camera formats the ingest reads: HELICoiD folders (raw counts with
white/dark references and a gtMap) and TIVITA cubes with an annotation image beside them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from samsa_stream.cli import main
from samsa_stream.evaluation.scenes import make_scene
from tests.ingest.builders import write_helicoid, write_tivita


def helicoid_from(scene_cube: np.ndarray, labels: np.ndarray, wavelengths: np.ndarray, folder: Path,
                  seed: int) -> None:
    """Raw sensor counts of the scene: dark + reflectance x (white - dark), with the references' own noise."""
    rng = np.random.default_rng(seed)
    h, w, b = scene_cube.shape
    dark = 100.0 + rng.normal(0, 2, size=(4, w, b))
    white = 3000.0 + rng.normal(0, 20, size=(4, w, b))
    raw = dark.mean(axis=0) + scene_cube * (white.mean(axis=0) - dark.mean(axis=0))
    write_helicoid(folder, np.round(raw).astype(np.uint16), np.round(white).astype(np.uint16),
                   np.round(dark).astype(np.uint16), wavelengths, labels=labels)


def test_eval_reads_helicoid_folders_and_tivita_cubes_with_annotation_images(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    for seed in range(2):
        scene = make_scene("tiny", seed, height=40, width=48, bands=100)
        helicoid_from(scene.cube, scene.labels, scene.wavelengths_nm, data / f"op{seed}", seed)
    scene = make_scene("tiny", 7, height=40, width=48, bands=100)
    write_tivita(data / "case_SpecCube.dat", scene.cube)
    cv2.imwrite(str(data / "case_SpecCube_labels.png"), scene.labels.astype(np.uint8))

    out = tmp_path / "report"
    assert main(["eval", str(data), "--engine", "spectral", "--clicks", "5", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 3
    report = json.loads((out / "report.json").read_text())
    images = {r["image"] for r in report["rows"] if r["kind"] == "object"}
    assert images == {"op0", "op1", "case_SpecCube.dat"}
    spectral = report["summary"]["methods"]["spectral"]
    assert spectral["objects"] == summary["objects"] > 10 and spectral["errors"] == 0
    assert spectral["dice_at"]["5"] >= 0.9
    assert spectral["dice_at"]["5"] > report["summary"]["methods"]["angle-mapper"]["dice_at"]["5"]
