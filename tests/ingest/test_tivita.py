"""TIVITA ``*_SpecCube.dat``: files built in the test from the documented byte layout."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.ingest.formats import ReadOptions, open_captures
from samsa_stream.ingest.formats.tivita import read_tivita_cube
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources import SourceError, make_source
from samsa_stream.settings import IngestSettings

from .builders import write_tivita


def _image(h: int = 4, w: int = 6, b: int = 5) -> np.ndarray:
    # Each value encodes its own (row, column, band), so any transposition or flip shows.
    y, x, band = np.meshgrid(np.arange(h), np.arange(w), np.arange(b), indexing="ij")
    return (y * 100 + x + band / 10).astype(np.float32)


def test_reads_the_image_upright(tmp_path: Path) -> None:
    image = _image()
    path = write_tivita(tmp_path / "2021_04_15_SpecCube.dat", image)
    (capture,) = list(open_captures(path))
    np.testing.assert_array_equal(capture.cube, image)
    assert capture.calibration == "reflectance"
    assert capture.metadata["format"] == "tivita"


def test_equals_rot90_of_the_stored_array(tmp_path: Path) -> None:
    image = _image(3, 5, 2)
    path = write_tivita(tmp_path / "a_SpecCube.dat", image)
    dims = struct.unpack(">3i", path.read_bytes()[:12])
    assert dims == (5, 3, 2)
    stored = np.frombuffer(path.read_bytes(), dtype=">f4", offset=12).reshape(dims)
    np.testing.assert_array_equal(read_tivita_cube(path), np.rot90(stored))


def test_default_and_configured_wavelengths(tmp_path: Path) -> None:
    path = write_tivita(tmp_path / "a_SpecCube.dat", _image(2, 2, 100))
    (capture,) = list(open_captures(path))
    np.testing.assert_allclose(capture.wavelengths_nm, np.linspace(500, 1000, 100))
    (capture,) = list(open_captures(path, ReadOptions(tivita_wavelength_range_nm=(500.0, 995.0))))
    np.testing.assert_allclose(capture.wavelengths_nm, np.arange(500, 1000, 5))
    # The setting reaches the reader through the replay source.
    source = make_source(IngestSettings(source=str(path), tivita_wavelength_range_nm=(510, 990)))
    (capture,) = list(source.captures())
    assert capture.wavelengths_nm[0] == 510 and capture.wavelengths_nm[-1] == 990


def test_not_calibrated_again(tmp_path: Path) -> None:
    image = np.full((3, 4, 100), 0.25, np.float32)
    (capture,) = list(open_captures(write_tivita(tmp_path / "a_SpecCube.dat", image)))
    frame = Normalizer(IngestSettings())(capture, "s", 0, 0)
    np.testing.assert_array_equal(frame.cube, image)
    assert frame.cube.dtype == np.float32 and frame.cube.flags.c_contiguous


@pytest.mark.parametrize("payload,message", [
    (b"\x00\x00", "2 bytes; a TIVITA cube starts with a 12-byte header"),
    (struct.pack("<3i", 640, 480, 100) + b"\0" * 16, "as big-endian int32; expected three positive sizes"),
    (struct.pack(">3i", 4, 3, 0), "expected three positive sizes"),
    (struct.pack(">3i", 2, 2, 2) + b"\0" * 31,
     "43 bytes, but a 2 x 2 x 2 TIVITA cube (header + big-endian float32) is 44"),
    (struct.pack(">3i", 2, 2, 2) + b"\0" * 40, "52 bytes, but a 2 x 2 x 2 TIVITA cube"),
], ids=["short", "little-endian-header", "zero-bands", "truncated", "trailing-bytes"])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad_SpecCube.dat"
    path.write_bytes(payload)
    (error,) = list(open_captures(path))
    assert isinstance(error, SourceError)
    assert message in str(error) and "bad_SpecCube.dat" in str(error)
