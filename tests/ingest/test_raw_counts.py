"""Raw counts without white/dark references: refused by default, scaled with ``ingest.raw_counts=scale``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.ingest.calibration import scale_counts
from samsa_stream.ingest.capture import Capture, SourceError
from samsa_stream.ingest.formats import read_capture
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.settings import IngestSettings

WL = np.linspace(450.0, 900.0, 4)


def _counts(dtype: str = "uint16") -> np.ndarray:
    return np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype) * 1000


@pytest.fixture
def raw_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "r.npy", _counts())
    np.save(tmp_path / "r_wavelengths_nm.npy", WL)
    return tmp_path / "r.npy"


def test_integer_counts_are_divided_by_their_dtype_range() -> None:
    scaled = scale_counts(_counts())
    assert scaled.cube.dtype == np.float32 and (scaled.divisor, scaled.basis) == (65535.0, "uint16 range")
    np.testing.assert_allclose(scaled.cube, _counts() / 65535.0, rtol=1e-6)
    signed = scale_counts(np.array([[[-5, 0, 16383, 32767]]], np.int16))
    np.testing.assert_allclose(signed.cube[0, 0], [0.0, 0.0, 16383 / 32767, 1.0], rtol=1e-6)  # negatives clip to 0


def test_float_counts_are_divided_by_a_high_percentile() -> None:
    raw = np.full((40, 40, 3), 200.0, np.float32)
    raw[0, 0, 0] = 1e9  # a hot pixel does not set the scale
    scaled = scale_counts(raw)
    assert scaled.divisor == pytest.approx(200.0) and "percentile" in scaled.basis
    assert scaled.cube.max() == 1.0 and scaled.cube[5, 5, 1] == pytest.approx(1.0)


def test_refusal_names_the_setting(raw_npy: Path) -> None:
    capture = read_capture(raw_npy, 0)
    with pytest.raises(SourceError, match=r"r\.npy\): raw counts \(uint16\) and no white/dark references: .*"
                                          r"or set ingest\.raw_counts=scale"):
        Normalizer(IngestSettings())(capture, "s", 0, 0)


def test_scaled_frames_are_marked_and_say_how(raw_npy: Path) -> None:
    frame = Normalizer(IngestSettings(raw_counts="scale"))(read_capture(raw_npy, 0), "s", 0, 0)
    assert frame.calibration == "scaled_counts"
    np.testing.assert_allclose(frame.cube, _counts() / 65535.0, rtol=1e-6)
    assert frame.source["counts_divisor"] == 65535.0
    assert frame.source["calibrated_with"] == "nothing: raw counts / 65535 (uint16 range)"


def test_references_win_over_scaling() -> None:
    capture = Capture(cube=_counts(), wavelengths_nm=WL, calibration="raw", white=np.full(4, 23000, np.uint16),
                      dark=np.zeros(4, np.uint16))
    frame = Normalizer(IngestSettings(raw_counts="scale"))(capture, "s", 0, 0)
    assert frame.calibration == "reflectance"
    np.testing.assert_allclose(frame.cube, np.minimum(_counts() / 23000.0, 1.0), rtol=1e-6)


def test_convert_keeps_the_mark_through_npz(raw_npy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.npz"
    assert main(["convert", str(raw_npy), str(out)]) == 1
    assert "or set ingest.raw_counts=scale" in capsys.readouterr().err
    assert main(["convert", str(raw_npy), str(out), "--set", "ingest.raw_counts=scale"]) == 0
    assert "scaled_counts (not reflectance)" in capsys.readouterr().out
    again = read_capture(out, 0)
    assert again.calibration == "scaled_counts"
    frame = Normalizer(IngestSettings())(again, "s", 0, 0)  # no setting needed to replay it: already scaled
    assert frame.calibration == "scaled_counts"
    np.testing.assert_allclose(frame.cube, _counts() / 65535.0, rtol=1e-6)
    assert main(["inspect", str(out), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["calibration"] == "raw counts scaled to [0, 1] without references (not reflectance)"
    assert main(["convert", str(raw_npy), str(tmp_path / "o.hdr"), "--set", "ingest.raw_counts=scale"]) == 1
    assert "which an ENVI file cannot record; write OUTPUT.npz" in capsys.readouterr().err


@pytest.mark.parametrize("setting, captured, rejected", [(None, 0, 1), ("scale", 1, 0)])
def test_ingest_refuses_or_scales(raw_npy: Path, setting: str | None, captured: int, rejected: int) -> None:
    with tempfile.TemporaryDirectory(prefix="samsa-raw-") as scratch:  # a short ipc:// path
        stats = Path(scratch) / "stats.json"
        cmd = [sys.executable, "-m", "samsa_stream", "ingest", "--source", str(raw_npy), "--pace", "fast",
               "--endpoint", f"ipc://{scratch}/frames", "--set", "sockets.shared_memory=off",
               "--stats-file", str(stats)]
        if setting:
            cmd += ["--set", f"ingest.raw_counts={setting}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        counters = json.loads(stats.read_text())["counters"]
    assert counters.get("frames_captured", 0) == captured
    assert counters.get("captures_rejected", 0) == rejected
    if rejected:
        assert "ingest.raw_counts=scale" in done.stderr
