"""``samsa-stream eval``: quality on the phantom, the outputs, baselines, resuming, several ranks, bad use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.evaluation.scenes import make_scene
from samsa_stream.node import free_tcp_ports

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SUBPROCESS_TIMEOUT_S = 180  # torchrun starts three interpreters with torch on a small, busy machine


def make_phantom(folder: Path, count: int, size: str, bands: int) -> Path:
    """A phantom dataset written by ``samsa-stream dataset``; returns its manifest."""
    assert main(["dataset", "phantom", "--out", str(folder), "--count", str(count), "--size", size,
                 "--bands", str(bands)]) == 0
    return folder / "manifest.json"


def run_eval(dataset: Path, out: Path, *flags: str) -> int:
    return main(["eval", str(dataset), "--out", str(out), "--quiet", *flags])


def read_report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def without_timings(report: dict[str, Any]) -> dict[str, Any]:
    """config, summary and rows with every figure that measures time taken out."""
    summary = json.loads(json.dumps(report["summary"]))
    for stats in [*summary["methods"].values(), *(s for per in summary["classes"].values() for s in per.values())]:
        stats.pop("click_ms")
        stats.pop("prepare_ms_median")
    rows = [{k: v for k, v in row.items() if k not in ("click_ms", "prepare_ms")} for row in report["rows"]]
    return {"config": report["config"], "notices": report["notices"], "summary": summary, "rows": rows}


def is_png(path: Path) -> bool:
    image = cv2.imread(str(path))
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image is not None and image.size > 0


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs are one rank, whatever launched the tests."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64 x 64 phantom frames, 24 bands; objects are classes (blood, fat), as the manifest says."""
    return make_phantom(tmp_path_factory.mktemp("phantom") / "data", 4, "64x64", 24)


@pytest.fixture(scope="module")
def phantom_run(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spectral engine on the phantom, 5 clicks per object."""
    out = tmp_path_factory.mktemp("phantom-run") / "out"
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "5") == 0
    return out


# ------------------------------------------------------------------------------------------ quality


def test_spectral_engine_reaches_dice_90_in_5_clicks_on_the_phantom(phantom_run: Path) -> None:
    report = read_report(phantom_run)
    spectral = report["summary"]["methods"]["spectral"]
    assert spectral["objects"] == report["summary"]["objects"] == 8 and spectral["errors"] == 0
    assert spectral["dice_at"]["5"] >= 0.9
    assert report["notices"] == []  # nothing about the masks to warn of


# ------------------------------------------------------------------------------------------ outputs


def test_outputs_report_table_per_method_and_class_and_plots(phantom_run: Path) -> None:
    report = read_report(phantom_run)
    methods = report["config"]["methods"]
    assert methods == ["spectral", "angle-mapper"]  # the angle-mapper baseline joins by default
    assert sorted(p.name for p in phantom_run.iterdir()) == sorted(
        ["report.json", "report.md", "run.json", "rows", "dice_vs_clicks.png",
         *(f"worst_{m}.png" for m in methods)])
    text = (phantom_run / "report.md").read_text()
    classes = list(report["summary"]["classes"])
    assert classes == ["blood", "fat"]
    sections = text.split("\n## ")
    titles = [s.splitlines()[0] for s in sections[1:]]
    assert titles == ["All objects", *(f"Class: {c}" for c in classes)]
    for section in sections[1:]:
        header = next(line for line in section.splitlines() if line.startswith("| method |"))
        assert "DICE@1 %" in header and "DICE@5 %" in header and "NoC@85" in header and "NoC@90" in header
        cells = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
        assert set(methods) <= set(cells)
    spectral = report["summary"]["methods"]["spectral"]
    low, high = spectral["dice_at_ci95"]["1"]
    assert low <= spectral["dice_at"]["1"] <= high
    assert (f"| spectral | 8 | {100 * spectral['dice_at']['1']:.1f} ({100 * low:.1f}-{100 * high:.1f}) |"
            in text)
    for name in ["dice_vs_clicks.png", *(f"worst_{m}.png" for m in methods)]:
        assert is_png(phantom_run / name), name


def test_no_baselines_runs_only_the_given_methods(phantom: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom.parent / "phantom-0000.npz", out, "--engine", "spectral", "--clicks", "2",
                    "--no-baselines") == 0
    brief = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert brief["images"] == 1 and list(brief["methods"]) == ["spectral"]
    report = read_report(out)
    assert report["config"]["methods"] == ["spectral"] and list(report["summary"]["methods"]) == ["spectral"]
    assert {r["method"] for r in report["rows"] if r["kind"] == "object"} == {"spectral"}
    assert not (out / "worst_angle-mapper.png").exists() and is_png(out / "worst_spectral.png")


def test_a_baseline_given_as_the_method_is_not_run_twice(phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom.parent / "phantom-0000.npz", out, "--engine", "angle-mapper", "--clicks", "1") == 0
    assert read_report(out)["config"]["methods"] == ["angle-mapper"]


@pytest.mark.usefixtures("one_torch_thread")
def test_random_weights_add_the_rgb_baseline_and_say_masks_are_meaningless(phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom.parent / "phantom-0000.npz", out, "--engine", "spectral", "--clicks", "2",
                    "--random-weights", "--image-size", "128", "--device", "cpu") == 0
    report = read_report(out)
    assert report["config"]["methods"] == ["spectral", "angle-mapper", "rgb"]
    assert report["summary"]["methods"]["rgb"]["objects"] == report["summary"]["objects"] > 0
    meaningless = [n for n in report["notices"] if "masks are meaningless" in n]
    assert meaningless
    assert f"> **{meaningless[0]}**" in (out / "report.md").read_text()
    assert is_png(out / "worst_rgb.png")


@pytest.mark.usefixtures("one_torch_thread")
def test_the_report_names_the_adapter_it_measured_by_hash_and_training_record(phantom: Path, tmp_path: Path) -> None:
    import hashlib

    from samsa_stream.worker.engines.fusion_adapter import FusionAdapter, save_adapter

    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, FusionAdapter(), "sam2.1_hiera_tiny", info={"dataset": "ward-7", "shots": 3})
    out = tmp_path / "out"
    assert run_eval(phantom.parent / "phantom-0000.npz", out, "--engine", "decoder", "--clicks", "1", "--no-baselines",
                    "--random-weights", "--image-size", "128", "--device", "cpu", "--adapter", str(adapter)) == 0
    weights = read_report(out)["config"]["settings"]["weights"]
    assert weights["adapter"]["sha256"] == hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert weights["adapter"]["info"]["dataset"] == "ward-7" and weights["adapter"]["info"]["shots"] == 3
    assert "checkpoint" not in weights  # random weights: no file to name
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\x01")  # another adapter: its rows are not mixed in
    assert run_eval(phantom.parent / "phantom-0000.npz", out, "--engine", "decoder", "--clicks", "1",
                    "--no-baselines", "--random-weights", "--image-size", "128", "--device", "cpu",
                    "--adapter", str(adapter)) == 1


# ------------------------------------------------------------------------------------------- resume


def test_an_interrupted_run_resumes_to_the_same_report(phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "4") == 0
    whole = read_report(out)
    rows_file = out / "rows" / "rank-0.jsonl"
    lines = rows_file.read_text().splitlines(keepends=True)
    assert len(lines) == len(whole["rows"]) > 5
    kept = [json.loads(line) for line in lines[:3]]
    rows_file.write_text("".join(lines[:3]) + lines[3][:len(lines[3]) // 2])  # crashed while writing row 4
    (out / "report.json").unlink()

    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "4") == 0
    resumed = read_report(out)
    assert without_timings(resumed) == without_timings(whole)
    for row in kept:  # the rows written before the crash were kept, not measured again
        assert row in resumed["rows"]

    before = rows_file.read_bytes()
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "4") == 0  # nothing left to do
    assert rows_file.read_bytes() == before
    assert without_timings(read_report(out)) == without_timings(whole)


@pytest.mark.parametrize(("flags", "differs"), [
    (["--clicks", "3"], "budget"),
    (["--clicks", "5", "--no-baselines"], "methods"),
    (["--clicks", "5", "--set", "worker.spectral.threshold_rad=0.2"], "settings"),
    (["--clicks", "5", "--objects", "components"], "dataset"),
])
def test_a_rerun_that_measures_something_else_is_refused(phantom: Path, phantom_run: Path, flags: list[str],
                                                         differs: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows_before = (phantom_run / "rows" / "rank-0.jsonl").read_bytes()
    report_before = (phantom_run / "report.json").read_bytes()
    capsys.readouterr()
    assert run_eval(phantom, phantom_run, "--engine", "spectral", *flags) == 1
    err = capsys.readouterr().err
    assert f"differs in: {differs})" in err and "--restart" in err and str(phantom_run) in err
    assert (phantom_run / "rows" / "rank-0.jsonl").read_bytes() == rows_before  # nothing mixed in
    assert (phantom_run / "report.json").read_bytes() == report_before


def test_restart_discards_the_rows_of_another_run(phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "4", "--no-baselines") == 0
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "2", "--no-baselines") == 1
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "2", "--no-baselines", "--restart") == 0
    report = read_report(out)
    assert report["config"]["budget"] == report["summary"]["budget"] == 2
    assert json.loads((out / "run.json").read_text())["budget"] == 2
    stored = [json.loads(line) for line in (out / "rows" / "rank-0.jsonl").read_text().splitlines()]
    objects = [r for r in stored if r["kind"] == "object"]
    assert objects and all(len(r["dice"]) == 2 for r in objects)  # no row of the 4-click run is left
    assert len(stored) == len(report["rows"])


# -------------------------------------------------------------------------------------------- ranks


def run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in LAUNCHER_VARS:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_gloo_ranks_give_the_report_of_one_process(tmp_path: Path) -> None:
    dataset = make_phantom(tmp_path / "data", 5, "48x48", 16)  # 5 images: rank 0 takes 3, rank 1 takes 2
    flags = ["eval", str(dataset), "--engine", "spectral", "--clicks", "4", "--quiet"]
    run_module(["samsa_stream", *flags, "--out", str(tmp_path / "one")], tmp_path)
    port = free_tcp_ports(1)[0]
    run_module(["torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port), "-m", "samsa_stream",
                *flags, "--out", str(tmp_path / "two")], tmp_path)

    shards = {}
    for rank in (0, 1):
        lines = (tmp_path / "two" / "rows" / f"rank-{rank}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        shards[rank] = sorted(r["image_index"] for r in rows if r["kind"] == "image")
    assert shards == {0: [0, 2, 4], 1: [1, 3]}

    one, two = read_report(tmp_path / "one"), read_report(tmp_path / "two")
    assert without_timings(two) == without_timings(one)
    assert two["summary"]["images"] == 5
    assert is_png(tmp_path / "two" / "dice_vs_clicks.png")


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("flags", "problem"), [
    (["--clicks", "0"], "--clicks must be 1..64, got 0"),
    (["--clicks", "65"], "--clicks must be 1..64, got 65"),
    (["--engine", "spectral,nosuch"], "unknown method(s) nosuch"),
    (["--engine", "rgb"], "needs a SAM2 checkpoint (--checkpoint"),
    (["--engine", ""], "--engine names no method"),
    (["--engine", " , "], "--engine names no method"),
    (["--engine", "spectral,spectral"], "names a method twice"),
    (["--min-area", "0"], "--min-area must be at least 1"),
    (["--skip", "zero"], "--skip 'zero' must be comma-separated integers"),
])
def test_bad_requests_exit_non_zero_naming_the_problem(phantom: Path, tmp_path: Path, flags: list[str], problem: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_eval(phantom, out, *flags) == 1
    err = capsys.readouterr().err
    assert err.startswith("samsa-stream eval: error: ") and problem in err, err
    assert not out.exists()  # nothing written


def test_a_dataset_without_labels_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scene = make_scene("phantom", 0, 32, 32, 8)
    np.savez(data / "frame.npz", cube=scene.cube, wavelengths_nm=scene.wavelengths_nm)  # no labels
    out = tmp_path / "out"
    assert run_eval(data, out, "--engine", "spectral") == 1
    err = capsys.readouterr().err
    assert "no capture with labels" in err and "1 capture(s) without labels" in err and str(data) in err
    assert not out.exists()


def test_a_dataset_that_does_not_exist_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval(tmp_path / "missing", tmp_path / "out") == 1
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_a_clicks_value_that_is_no_number_is_a_usage_error(phantom: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run_eval(phantom, tmp_path / "out", "--clicks", "many")
    assert caught.value.code == 2 and "--clicks: invalid int value: 'many'" in capsys.readouterr().err


def test_an_interrupted_run_says_how_to_resume_and_keeps_its_rows(phantom: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import samsa_stream.evaluation.run as run_module

    real = run_module.evaluate

    def stop_after_one_image(dataset, methods, config, store, ranks, radius, progress=None):
        real(dataset, methods, config, store, ranks.__class__(rank=0, world_size=len(dataset)), radius, progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "evaluate", stop_after_one_image)
    out = tmp_path / "out"
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "3") == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert not (out / "report.json").exists()
    monkeypatch.setattr(run_module, "evaluate", real)
    assert run_eval(phantom, out, "--engine", "spectral", "--clicks", "3") == 0
    assert read_report(out)["summary"]["images"] == 4
