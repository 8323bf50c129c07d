"""``samsa-stream dataset``: the files it writes read back through the ingest, and bad use is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.evaluation.dataset import open_dataset
from samsa_stream.evaluation.scenes import make_scene
from samsa_stream.ingest.formats import read_capture
from samsa_stream.settings import PhantomSettings, load_settings


@pytest.mark.parametrize("kind", ["tiny", "scattered"])
def test_writes_scenes_and_manifest(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert main(["dataset", kind, "--out", str(out), "--count", "3", "--seed", "5", "--size", "24x40",
                 "--bands", "12"]) == 0
    summary = json.loads(capsys.readouterr().out.strip())
    assert summary["images"] == 3 and summary["kind"] == kind and summary["size"] == [24, 40]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "samsa-stream/eval-dataset" and manifest["version"] == 1
    assert manifest["name"] == kind and manifest["objects"] == "classes" and manifest["skip"] == [0]
    assert [image["cube"] for image in manifest["images"]] == [f"{kind}-{i:04d}.npz" for i in range(3)]
    assert all(image["labels"] is None for image in manifest["images"])
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *(f"{kind}-{i:04d}.npz" for i in range(3))]

    seen: dict[str, str] = {}
    for index in range(3):
        scene = make_scene(kind, 5 + index, 24, 40, 12)
        capture = read_capture(out / f"{kind}-{index:04d}.npz", 0)
        assert capture.cube.dtype == np.float32 and np.array_equal(capture.cube, scene.cube)
        assert np.array_equal(capture.wavelengths_nm, scene.wavelengths_nm)
        assert capture.labels is not None and capture.labels.dtype == np.int32
        assert np.array_equal(capture.labels, scene.labels)
        seen |= {str(value): name for value, name in scene.classes.items()}
    assert manifest["classes"] == dict(sorted(seen.items(), key=lambda item: int(item[0])))
    assert summary["classes"] == manifest["classes"]

    dataset = open_dataset(out / "manifest.json", load_settings())
    assert len(dataset.entries) == 3


def test_phantom_kind_takes_the_phantom_settings(tmp_path: Path) -> None:
    out = tmp_path / "phantom"
    assert main(["dataset", "phantom", "--out", str(out), "--count", "2", "--seed", "4", "--size", "32x48",
                 "--bands", "8", "--set", "ingest.phantom.objects=3"]) == 0
    scene = make_scene("phantom", 5, 32, 48, 8, phantom=PhantomSettings(objects=3))
    capture = read_capture(out / "phantom-0001.npz", 0)
    assert np.array_equal(capture.cube, scene.cube) and np.array_equal(capture.labels, scene.labels)
    assert json.loads((out / "manifest.json").read_text())["classes"] == {"1": "blood", "2": "fat", "3": "vessel"}


def test_force_writes_into_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["dataset", "tiny", "--out", str(tmp_path), "--count", "1"]) == 1
    assert "not empty" in capsys.readouterr().err and not (tmp_path / "manifest.json").exists()
    assert main(["dataset", "tiny", "--out", str(tmp_path), "--count", "1", "--force"]) == 0
    assert (tmp_path / "tiny-0000.npz").is_file() and (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(("argv", "problem"), [
    (["--size", "8x8"], "height must be an integer >= 16"),
    (["--size", "64"], "--size must be HEIGHTxWIDTH"),
    (["--bands", "2"], "bands must be an integer >= 3"),
    (["--count", "0"], "--count must be >= 1"),
    (["--seed", "-3"], "seed must be an integer >= 0"),
])
def test_bad_arguments_name_the_problem(argv: list[str], problem: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert main(["dataset", "tiny", "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("samsa-stream dataset: error: ") and problem in err and err.count("\n") == 1
    assert not out.exists()  # nothing written


def test_unknown_kind_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "forest", "--out", str(tmp_path / "data")])
    assert exc.value.code != 0
    assert "invalid choice: 'forest'" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("")
    assert main(["dataset", "tiny", "--out", str(target)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
