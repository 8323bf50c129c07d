"""NumPy captures: ``.npy`` with side files (and sequences of them), the node's own ``.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsa_stream.ingest.formats import capture_files, open_captures
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources import SourceError
from samsa_stream.settings import IngestSettings

WL = np.array([450.0, 550.0, 650.0])


def _cube(value: float = 0.4, shape: tuple[int, int, int] = (2, 3, 3)) -> np.ndarray:
    return np.full(shape, value, np.float32)


def test_npy_with_its_own_wavelengths_and_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _cube())
    np.save(tmp_path / "a_wavelengths_nm.npy", WL)
    np.save(tmp_path / "a_labels.npy", np.eye(2, 3, dtype=np.int32))
    (capture,) = list(open_captures(tmp_path))  # the side files are not captures
    np.testing.assert_array_equal(capture.cube, _cube())
    np.testing.assert_array_equal(capture.wavelengths_nm, WL)
    np.testing.assert_array_equal(capture.labels, np.eye(2, 3))


def test_image_sequence_with_a_shared_wavelength_file(tmp_path: Path) -> None:
    for k in (2, 0, 1):
        np.save(tmp_path / f"frame_{k:04d}.npy", _cube(k / 10))
    (tmp_path / "wavelengths_nm.txt").write_text("450\n550\n650\n")
    captures = list(open_captures(tmp_path))
    assert [c.cube[0, 0, 0] for c in captures] == pytest.approx([0.0, 0.1, 0.2])
    assert [p.name for p in capture_files(tmp_path)] == ["frame_0000.npy", "frame_0001.npy", "frame_0002.npy"]


def test_npy_sequence_in_one_file(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.stack([_cube(0.1), _cube(0.2)]))
    np.save(tmp_path / "s_wavelengths_nm.npy", WL)
    assert len(list(open_captures(tmp_path / "s.npy"))) == 2


def test_npy_integer_is_raw_and_needs_references(tmp_path: Path) -> None:
    np.save(tmp_path / "r.npy", np.full((2, 3, 3), 60, np.uint16))
    np.save(tmp_path / "r_wavelengths_nm.npy", WL)
    (capture,) = list(open_captures(tmp_path / "r.npy"))
    assert capture.calibration == "raw"
    with pytest.raises(SourceError, match=r"r\.npy\): raw counts \(uint16\) and no white/dark references"):
        Normalizer(IngestSettings())(capture, "s", 0, 0)


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p / "x.npy", _cube()), "x.npy: no wavelengths next to it (looked for x_wavelengths_nm.npy"),
    (lambda p: (np.save(p / "x.npy", np.zeros((2, 3))), np.save(p / "x_wavelengths_nm.npy", WL)),
     "x.npy: a cube must be H x W x B (or T x H x W x B for a sequence), got shape (2, 3)"),
    (lambda p: (p / "x.npy").write_bytes(b"not numpy"), "x.npy: not a readable .npy cube"),
    (lambda p: (np.save(p / "x.npy", _cube()), np.save(p / "x_wavelengths_nm.npy", WL),
                np.save(p / "x_labels.npy", np.zeros((3, 3)))), "x_labels.npy: label map shape (1, 3, 3) does not fit"),
])
def test_bad_npy_files_are_refused(tmp_path: Path, make, message: str) -> None:
    make(tmp_path)
    (error,) = list(open_captures(tmp_path / "x.npy"))
    assert isinstance(error, SourceError) and message in str(error)


def test_npz_with_references_calibrates(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", cube=np.full((2, 3, 3), 60, np.uint16), wavelengths_nm=WL,
             white=np.full((4, 3, 3), 110), dark=np.full(3, 10))
    (capture,) = list(open_captures(tmp_path / "c.npz"))
    frame = Normalizer(IngestSettings())(capture, "s", 0, 0)
    np.testing.assert_allclose(frame.cube, 0.5)


def test_npz_sequence_labels_and_times(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", cubes=np.stack([_cube(0.1), _cube(0.2)]), wavelengths_nm=WL,
             labels=np.ones((2, 2, 3), np.int32), capture_ns=np.array([5, 9]))
    captures = list(open_captures(tmp_path / "c.npz"))
    assert [c.timestamp_ns for c in captures] == [5, 9]
    assert all(c.labels.shape == (2, 3) for c in captures)


@pytest.mark.parametrize("arrays,message", [
    ({"wavelengths_nm": WL}, "needs an array 'cube' (H x W x B) or 'cubes' (T x H x W x B)"),
    ({"cube": _cube()}, "needs 'wavelengths_nm' (one wavelength in nm per band)"),
    ({"cube": np.zeros((2, 3))}, "'cube' must be H x W x B, got shape (2, 3)"),
    ({"cube": _cube(), "wavelengths_nm": WL, "white": np.ones(3)}, "has white but not dark"),
    ({"cube": _cube(), "wavelengths_nm": WL, "calibration": "radiance"}, "'calibration' is 'radiance'"),
    ({"cube": _cube(), "wavelengths_nm": WL, "labels": np.zeros((3, 3))}, "'labels' shape (1, 3, 3) does not fit"),
])
def test_bad_npz_files_are_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "c.npz", **arrays)
    (error,) = list(open_captures(tmp_path / "c.npz"))
    assert isinstance(error, SourceError) and message in str(error) and "c.npz" in str(error)


def test_corrupt_npz_and_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 truncated")
    (error,) = list(open_captures(tmp_path / "c.npz"))
    assert "c.npz: not a readable .npz file" in str(error)
    (tmp_path / "c.tif").write_bytes(b"")
    (error,) = list(open_captures(tmp_path / "c.tif"))
    assert "c.tif: no reader for '.tif' files (known: .dat, .hdr, .npy, .npz" in str(error)
