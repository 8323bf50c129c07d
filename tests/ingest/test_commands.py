"""``samsa-stream inspect`` and ``convert`` on every format, in-process and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.ingest.formats import open_captures
from samsa_stream.ingest.formats.envi import write_envi

from .builders import write_helicoid, write_tivita

WL = np.linspace(400.0, 1000.0, 31)


@pytest.fixture
def captures(tmp_path: Path) -> dict[str, Path]:
    """One capture per format, each of reflectance 0.4 (labels 0..2 where the format carries them)."""
    d = tmp_path / "in"
    d.mkdir()
    refl = np.full((6, 8, WL.size), 0.4, np.float32)
    labels = np.arange(48).reshape(6, 8) % 3
    write_envi(d / "float.hdr", refl, WL, interleave="bil")
    write_envi(d / "scaled.hdr", np.full((6, 8, WL.size), 4000, np.int16), WL, interleave="bip", byte_order="big",
               reflectance_scale_factor=10000)
    write_envi(d / "counts.hdr", np.full((6, 8, WL.size), 4000, np.uint16), WL)
    write_tivita(d / "t_SpecCube.dat", np.full((6, 8, 100), 0.4, np.float32))
    write_helicoid(d / "op" / "012-01", np.full((6, 8, WL.size), 410, np.uint16),
                   np.full((2, 8, WL.size), 1010, np.uint16),
                   np.full((2, 8, WL.size), 10, np.uint16), WL, labels)
    np.save(d / "cube.npy", refl)
    np.save(d / "cube_wavelengths_nm.npy", WL)
    np.savez(d / "own.npz", cube=refl, wavelengths_nm=WL, labels=labels)
    return {"envi": d / "float.hdr", "envi-scaled": d / "scaled.hdr", "envi-raw": d / "counts.hdr",
            "tivita": d / "t_SpecCube.dat", "helicoid": d / "op" / "012-01", "npy": d / "cube.npy",
            "npz": d / "own.npz"}


EXPECTED = {  # format, dtype, bands, calibration, labels
    "envi": ("envi", "float32", 31, "reflectance", False),
    "envi-scaled": ("envi", "int16", 31, "reflectance (stored x 10000)", False),
    "envi-raw": ("envi", "uint16", 31, "raw counts, no references", False),
    "tivita": ("tivita", "float32", 100, "reflectance", False),
    "helicoid": ("helicoid", "uint16", 31, "raw counts, white/dark references present", True),
    "npy": ("npy", "float32", 31, "reflectance", False),
    "npz": ("npz", "float32", 31, "reflectance", True),
}


@pytest.mark.parametrize("kind", EXPECTED)
def test_inspect_json(captures: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(captures[kind]), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    fmt, dtype, bands, calibration, labels = EXPECTED[kind]
    assert (entry["format"], entry["dtype"], entry["shape"], entry["calibration"], entry["labels"]) == (
        fmt, dtype, [6, 8, bands], calibration, labels)
    first, last = (500, 1000) if kind == "tivita" else (400, 1000)
    assert entry["wavelengths"]["count"] == bands
    assert (entry["wavelengths"]["first_nm"], entry["wavelengths"]["last_nm"]) == (first, last)


@pytest.mark.parametrize("kind", [k for k in EXPECTED if k != "envi-raw"])
def test_convert_to_the_normalized_form(captures: dict[str, Path], kind: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npz"
    assert main(["convert", str(captures[kind]), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out) as data:
        bands = EXPECTED[kind][2]
        assert data["cube"].dtype == np.float32 and data["cube"].shape == (6, 8, bands)
        np.testing.assert_allclose(data["cube"], 0.4, rtol=1e-6)
        assert data["wavelengths_nm"].shape == (bands,)
        assert data["rgb"].dtype == np.uint8 and data["rgb"].shape == (6, 8, 3)
        assert ("labels" in data.files) == EXPECTED[kind][4]
        if EXPECTED[kind][4]:
            np.testing.assert_array_equal(data["labels"], np.arange(48).reshape(6, 8) % 3)
    (again,) = list(open_captures(out))  # the output is itself a capture the node replays
    np.testing.assert_allclose(again.cube, 0.4, rtol=1e-6)


def test_convert_raw_without_references_fails_with_the_reason(captures: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(captures["envi-raw"]), str(tmp_path / "o.npz")]) == 1
    err = capsys.readouterr().err
    assert "counts.hdr): raw counts (uint16) and no white/dark references" in err
    white, dark = tmp_path / "w.npy", tmp_path / "d.npy"
    np.save(white, np.full((1, 8, WL.size), 10000, np.uint16))
    np.save(dark, np.zeros((1, 8, WL.size), np.uint16))
    np.save(tmp_path / "w_wavelengths_nm.npy", WL)
    np.save(tmp_path / "d_wavelengths_nm.npy", WL)
    assert main(["convert", str(captures["envi-raw"]), str(tmp_path / "o.npz"),
                 "--set", f"ingest.white_reference={white}",
                 "--set", f"ingest.dark_reference={dark}"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["cube"], 0.4)


def test_convert_to_envi_and_back(captures: dict[str, Path], tmp_path: Path) -> None:
    assert main(["convert", str(captures["tivita"]), str(tmp_path / "t.hdr")]) == 0
    (capture,) = list(open_captures(tmp_path / "t.hdr"))
    np.testing.assert_allclose(capture.cube, 0.4)
    np.testing.assert_allclose(capture.wavelengths_nm, np.linspace(500, 1000, 100))


def test_convert_a_folder_needs_frame_or_all(captures: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = captures["npz"].parent
    assert main(["convert", str(folder), str(tmp_path / "o.npz")]) == 1
    assert "holds more than one capture; choose one with --frame N" in capsys.readouterr().err
    assert main(["convert", str(folder), str(tmp_path / "o.npz"), "--frame", "99"]) == 1
    assert "holds 7 capture(s) (0..6); there is no capture 99" in capsys.readouterr().err
    assert main(["convert", str(captures["npy"]), str(tmp_path / "o.txt")]) == 1
    assert "OUTPUT must end in .npz" in capsys.readouterr().err


def test_inspect_a_folder_reports_each_capture_and_each_error(captures: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = captures["npz"].parent
    (folder / "broken.hdr").write_text("ENVI\nsamples = 2\n")
    assert main(["inspect", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert out.count("  format") == 7
    assert "broken.hdr: required field 'lines' is missing" in err


def test_from_the_command_line(captures: dict[str, Path], tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "samsa_stream"]
    shown = subprocess.run([*cmd, "inspect", str(captures["tivita"])], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "tivita" in shown.stdout and "6 x 8 x 100 (H x W x B)" in shown.stdout
    done = subprocess.run([*cmd, "convert", str(captures["helicoid"]), str(tmp_path / "h.npz")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "h.npz")["labels"].shape == (6, 8)


def test_inspect_numbers_captures_as_frame_picks_them(captures: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = captures["npz"].parent
    assert main(["inspect", str(folder), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [e["capture"] for e in listing] == list(range(7))
    npy = next(e for e in listing if e["format"] == "npy")
    assert main(["inspect", str(folder), "--frame", str(npy["capture"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [npy]
    assert main(["convert", str(folder), str(tmp_path / "o.npz"), "--frame", str(npy["capture"])]) == 0
    assert json.loads(np.load(tmp_path / "o.npz")["source_json"].item())[0]["format"] == "npy"
    capsys.readouterr()
    assert main(["inspect", str(folder), "--frame", "7"]) == 1
    assert "holds 7 capture(s) (0..6); there is no capture 7" in capsys.readouterr().err
