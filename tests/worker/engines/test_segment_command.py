"""``samsa-stream segment`` on capture files the ingest reads, and its errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.commands.segment import ClickSpec, parse_click
from samsa_stream.errors import CommandError
from samsa_stream.spectral.angles import spectral_angles
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE

SAM2_FLAGS = ["--random-weights", "--seed", "1", "--image-size", str(IMAGE_SIZE), "--device", "cpu"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list]:
    cam, frames = phantom_frames(bands=24, height=48, width=64, count=3, objects=2)
    path = tmp_path_factory.mktemp("captures") / "capture.npz"
    np.savez(path, cubes=np.stack([f.cube for f in frames]), wavelengths_nm=frames[0].wavelengths_nm,
             labels=np.stack([f.labels for f in frames]))
    return path, cam, frames


def run(*argv: str) -> int:
    return main(["segment", *argv])


@pytest.mark.parametrize("text, expected", [
    ("10,20", ClickSpec(10, 20, True, 1)),
    ("10.5,20,0", ClickSpec(10.5, 20, False, 1)),
    ("10,20,1@3", ClickSpec(10, 20, True, 3)),
    ("10,20@2", ClickSpec(10, 20, True, 2)),
])
def test_click_syntax(text: str, expected: ClickSpec) -> None:
    assert parse_click(text) == expected


@pytest.mark.parametrize("text, message", [
    ("10", "must be X,Y"), ("a,b", "must be X,Y"), ("1,2,2", "LABEL must be 1 \\(positive\\) or 0"),
    ("1,2@0", "OBJECT must be a positive integer"),
])
def test_bad_click_syntax(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_click(text)


@pytest.mark.parametrize("engine", ["rgb", "spectral", "prompt", "decoder"])
def test_segment_writes_every_array(capture, tmp_path: Path, engine: str, capsys) -> None:
    path, cam, frames = capture
    x1, y1 = cam.centre(0, 1)
    x2, y2 = cam.centre(1, 1)
    out = tmp_path / "out.npz"
    assert run(str(path), "--frame", "1", "--click", f"{x1:.0f},{y1:.0f}", "--click", f"{x2:.0f},{y2:.0f},1@2",
               "--click", "2,2,0@2", "--engine", engine, "--reference-radius", "0", *SAM2_FLAGS,
               "--out", str(out)) == 0
    assert f'"engine": "{engine}"' in capsys.readouterr().out
    with np.load(out) as data:
        assert data["masks"].shape == (2, 48, 64) and data["masks"].dtype == bool
        assert data["logits"].shape == (2, 48, 64) and data["logits"].dtype == np.float32
        assert data["scores"].shape == (2,) and data["object_ids"].tolist() == [1, 2]
        assert data["similarity"].shape == (2, 48, 64) and data["similarity"].dtype == np.float32
        assert np.array_equal(data["masks"], data["logits"] > 0) or engine == "spectral"
        angle = data["spectral_angle_rad"]
        assert angle.shape == (2, 48, 64) and angle.dtype == np.float32
        cube = frames[1].cube
        ref = cube[int(round(y1)), int(round(x1))]  # --reference-radius 0: the clicked pixel itself
        np.testing.assert_allclose(angle[0], spectral_angles(cube, ref)[..., 0], atol=1e-6)
        assert angle[0][int(round(y1)), int(round(x1))] == pytest.approx(0.0, abs=1e-3)
        assert data["similarity"][0][int(round(y1)), int(round(x1))] > 0.99
        if engine != "spectral":
            assert "masks are meaningless" in " ".join(data["notices"].tolist())


def test_segment_reads_envi_written_by_spy(tmp_path: Path) -> None:
    envi = pytest.importorskip("spectral.io.envi")
    cam, (frame,) = phantom_frames(bands=20, height=40, width=56, count=1)
    header = tmp_path / "scene.hdr"
    envi.save_image(str(header), frame.cube, dtype=np.float32, interleave="bil", byteorder=1,
                    metadata={"wavelength": [f"{w:.3f}" for w in frame.wavelengths_nm], "wavelength units": "nm"})
    out = tmp_path / "out.npz"
    x, y = cam.centre(0, 0)
    assert run(str(header), "--click", f"{x:.0f},{y:.0f}", "--engine", "prompt", *SAM2_FLAGS, "--out", str(out)) == 0
    with np.load(out) as data:
        assert data["masks"].shape == (1, 40, 56)
        np.testing.assert_allclose(data["wavelengths_nm"], frame.wavelengths_nm, atol=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--click", "64,10"], "click 64,10 is outside the 64x48 image \\(X is the column 0..63, Y the row 0..47\\)"),
    (["--click", "10,-1"], "outside the 64x48 image"),
    (["--click", "10,10", "--frame", "3"], "capture.npz: holds 3 capture\\(s\\) \\(0..2\\); there is no capture 3"),
    (["--click", "10,10,0"], "object 1 does not exist yet: its first click must be positive"),
    (["--click", "10,10", "--engine", "rgb"], "engine 'rgb' needs --checkpoint PATH"),
    (["--click", "10,10", "--engine", "rgb", "--checkpoint", "/nonexistent/sam2.1_hiera_tiny.pt"],
     "SAM2 checkpoint /nonexistent/sam2.1_hiera_tiny.pt does not exist"),
    (["--click", "10,10", "--engine", "sam3"], "worker.engine: .*engine 'sam3' is not available"),
])
def test_bad_input_is_named(capture, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    path, _, _ = capture
    assert run(str(path), *args, "--out", str(tmp_path / "o.npz")) in (1, 2)
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "o.npz").exists()


def test_out_must_be_npz(capture, tmp_path: Path, capsys) -> None:
    path, _, _ = capture
    assert run(str(path), "--click", "10,10", "--out", str(tmp_path / "o.npy")) == 1
    assert "--out must name a .npz file" in capsys.readouterr().err


def test_missing_input_and_bad_click_flag(tmp_path: Path, capsys) -> None:
    assert run(str(tmp_path / "none.npz"), "--click", "1,1", "--out", str(tmp_path / "o.npz")) == 1
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(str(tmp_path / "none.npz"), "--click", "1;1", "--out", str(tmp_path / "o.npz"))
    assert "must be X,Y[,LABEL][@OBJECT]" in capsys.readouterr().err


def test_raw_counts_scaled_segment_like_their_reflectance(capture, tmp_path: Path, capsys) -> None:
    """The spectral angle does not depend on scale: counts of a flat-lit scene, scaled by the dtype's range,
    give the mask of the calibrated reflectance."""
    path, cam, frames = capture
    counts = tmp_path / "counts.npy"
    np.save(counts, np.round(frames[1].cube * 4000).astype(np.uint16))  # counts = reflectance x 4000, no dark
    np.save(tmp_path / "counts_wavelengths_nm.npy", frames[1].wavelengths_nm)
    x, y = cam.centre(0, 1)
    click = ["--click", f"{x:.0f},{y:.0f}", "--engine", "spectral"]
    assert run(str(counts), *click, "--out", str(tmp_path / "refused.npz")) == 1
    assert "set ingest.raw_counts=scale" in capsys.readouterr().err
    assert run(str(path), "--frame", "1", *click, "--out", str(tmp_path / "reflectance.npz")) == 0
    assert run(str(counts), *click, "--set", "ingest.raw_counts=scale", "--out", str(tmp_path / "scaled.npz")) == 0
    assert "frame is scaled_counts, not calibrated reflectance" in capsys.readouterr().out
    with np.load(tmp_path / "reflectance.npz") as a, np.load(tmp_path / "scaled.npz") as b:
        assert (str(a["calibration"]), str(b["calibration"])) == ("reflectance", "scaled_counts")
        want, got = a["masks"][0], b["masks"][0]
    assert want.sum() > 50
    assert np.logical_xor(want, got).sum() <= 0.01 * want.sum()  # quantization to counts may flip an edge pixel
