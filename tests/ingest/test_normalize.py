"""Capture -> frame: calibration, NaN/inf, binning, band range, resampling, dtype, and the rejections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.ingest.formats.envi import write_envi
from samsa_stream.ingest.normalize import Normalizer, bin_labels, bin_pixels, grid_wavelengths
from samsa_stream.ingest.sources import Capture, SourceError
from samsa_stream.settings import IngestSettings, WavelengthGrid

WL = np.linspace(400.0, 1000.0, 13)  # every 50 nm


def _normalize(capture: Capture, **settings: object):
    return Normalizer(IngestSettings(**settings))(capture, "cam0", 7, 0)


def _linear_cube(h: int = 4, w: int = 6) -> np.ndarray:
    # Reflectance linear in wavelength, so linear resampling must reproduce it exactly.
    return np.broadcast_to((WL - 400) / 1000, (h, w, WL.size)).astype(np.float32).copy()


def test_reflectance_passes_through_as_float32() -> None:
    cube = _linear_cube()
    frame = _normalize(Capture(cube=cube.astype(np.float64), wavelengths_nm=WL))
    assert frame.cube.dtype == np.float32
    np.testing.assert_array_equal(frame.cube, cube)
    assert frame.rgb.shape == (4, 6, 3) and frame.rgb.dtype == np.uint8
    frame.validate()


def test_float16_output() -> None:
    frame = _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), dtype="float16")
    assert frame.cube.dtype == np.float16
    frame.validate()


def test_nonfinite_values_are_replaced_and_counted() -> None:
    cube = _linear_cube()
    cube[0, 0, 0], cube[1, 2, 3], cube[3, 5, 12] = np.nan, np.inf, -np.inf
    frame = _normalize(Capture(cube=cube, wavelengths_nm=WL))
    assert frame.source["nonfinite_replaced"] == 3
    assert frame.cube[0, 0, 0] == 0 and np.isfinite(frame.cube).all()
    assert "nonfinite_replaced" not in _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL)).source


def test_band_range_keeps_the_bands_inside() -> None:
    frame = _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), band_range_nm=(500, 700))
    np.testing.assert_array_equal(frame.wavelengths_nm, [500, 550, 600, 650, 700])
    np.testing.assert_allclose(frame.cube[0, 0], [0.1, 0.15, 0.2, 0.25, 0.3], rtol=1e-6)


def test_resampling_onto_a_grid_is_exact_for_linear_spectra() -> None:
    grid = WavelengthGrid(start_nm=410, stop_nm=990, step_nm=20)
    frame = _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), wavelength_grid=grid)
    np.testing.assert_allclose(frame.wavelengths_nm, np.arange(410, 991, 20))
    np.testing.assert_allclose(frame.cube[2, 3], (np.arange(410, 991, 20) - 400) / 1000, atol=1e-6)


def test_band_range_then_grid() -> None:
    frame = _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), band_range_nm=(500, 800),
                       wavelength_grid=WavelengthGrid(start_nm=525, stop_nm=775, step_nm=50))
    np.testing.assert_allclose(frame.wavelengths_nm, [525, 575, 625, 675, 725, 775])


def test_grid_outside_the_bands_is_refused() -> None:
    grid = WavelengthGrid(start_nm=350, stop_nm=900, step_nm=10)
    with pytest.raises(SourceError, match="wavelength_grid 350-900 nm reaches outside the capture's bands 400-1000 nm"):
        _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), wavelength_grid=grid)
    with pytest.raises(SourceError, match="no band inside band_range_nm 1100-1200 nm"):
        _normalize(Capture(cube=_linear_cube(), wavelengths_nm=WL), band_range_nm=(1100, 1200))


def test_grid_wavelengths_include_the_stop() -> None:
    np.testing.assert_allclose(grid_wavelengths(WavelengthGrid(start_nm=500, stop_nm=1000, step_nm=0.5))[-1], 1000)


def test_spatial_binning_averages_blocks_and_samples_labels() -> None:
    cube = np.arange(5 * 7, dtype=np.float32).reshape(5, 7, 1) * np.ones(13, np.float32)
    labels = np.arange(35).reshape(5, 7)
    frame = _normalize(Capture(cube=cube, wavelengths_nm=WL, labels=labels), spatial_binning=2)
    assert frame.cube.shape == (2, 3, 13) and frame.labels.shape == (2, 3)
    # Block (0, 0) holds pixels 0, 1, 7, 8.
    assert frame.cube[0, 0, 0] == pytest.approx((0 + 1 + 7 + 8) / 4)
    assert frame.labels[0, 0] == labels[1, 1]  # the block's centre pixel
    with pytest.raises(SourceError, match="a 5 x 7 image is smaller than one 8 x 8 binning block"):
        _normalize(Capture(cube=cube, wavelengths_nm=WL), spatial_binning=8)


@hsettings(max_examples=30, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4))
def test_binning_preserves_the_mean_of_whole_blocks(h: int, w: int, k: int) -> None:
    if h < k or w < k:
        return
    cube = np.random.default_rng(h * 100 + w).uniform(0, 1, (h, w, 2)).astype(np.float32)
    binned = bin_pixels(cube, k, "x")
    kept = cube[:(h // k) * k, :(w // k) * k]
    assert binned.shape == (h // k, w // k, 2)
    np.testing.assert_allclose(binned.mean(axis=(0, 1)), kept.mean(axis=(0, 1)), rtol=1e-5)
    assert bin_labels(np.zeros((h, w), np.int32), k).shape == (h // k, w // k)


def test_session_references_calibrate_raw_captures(tmp_path: Path) -> None:
    write_envi(tmp_path / "white.hdr", np.full((3, 6, 13), 1010, np.uint16), WL)
    write_envi(tmp_path / "dark.hdr", np.full((3, 6, 13), 10, np.uint16), WL)
    raw = np.full((4, 6, 13), 260, np.uint16)
    frame = _normalize(Capture(cube=raw, wavelengths_nm=WL, calibration="raw"),
                       white_reference=tmp_path / "white.hdr", dark_reference=tmp_path / "dark.hdr")
    np.testing.assert_allclose(frame.cube, 0.25)
    assert frame.source["calibrated_with"] == "session white/dark references"


def test_session_reference_that_cannot_be_read_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"ingest.white_reference: .*missing.hdr: no such file"):
        Normalizer(IngestSettings(white_reference=tmp_path / "missing.hdr", dark_reference=tmp_path / "d.hdr"))


def test_guarded_calibration_is_reported() -> None:
    white = np.full((6, 13), 100.0)
    white[2, 4] = 0.0
    frame = _normalize(Capture(cube=np.full((4, 6, 13), 50, np.uint16), wavelengths_nm=WL, calibration="raw",
                               white=white, dark=np.zeros(13)))
    assert frame.source["calibration_guarded"] == 1 and frame.cube[0, 2, 4] == 0


CUBE = np.zeros((4, 6, 13))


@pytest.mark.parametrize("capture,message", [
    (Capture(cube=np.zeros((4, 6)), wavelengths_nm=WL),
     "cube must be H x W x B with every side >= 1, got shape (4, 6)"),
    (Capture(cube=np.zeros((4, 0, 13)), wavelengths_nm=WL), "every side >= 1, got shape (4, 0, 13)"),
    (Capture(cube=np.zeros((4, 6, 13), bool), wavelengths_nm=WL), "cube dtype bool is not numeric"),
    (Capture(cube=CUBE, wavelengths_nm=WL[:-1]), "12 wavelength(s) for 13 band(s)"),
    (Capture(cube=CUBE, wavelengths_nm=WL[::-1]), "strictly increasing; band 1 (950 nm) follows 1000 nm"),
    (Capture(cube=CUBE, wavelengths_nm=WL - 500), "wavelengths must be finite and positive (nm)"),
    (Capture(cube=CUBE, wavelengths_nm=WL, labels=np.zeros((4, 5))), "label map is (4, 5), the cube is (4, 6)"),
    (Capture(cube=CUBE, wavelengths_nm=WL, calibration="radiance"), "calibration state 'radiance'"),
    (Capture(cube=CUBE.astype(np.uint16), wavelengths_nm=WL, calibration="raw"),
     "raw counts (uint16) and no white/dark"),
])
def test_bad_captures_are_refused_naming_frame_and_file(capture: Capture, message: str) -> None:
    capture.metadata["file"] = "/data/cap_0042.npz"
    with pytest.raises(SourceError) as err:
        _normalize(capture)
    assert message in str(err.value)
    assert str(err.value).startswith("stream cam0 frame 7 (/data/cap_0042.npz): ")


def test_wavelength_ranges_can_be_given_as_text_on_the_command_line() -> None:
    from samsa_stream.settings import SettingsError, load_settings, parse_assignment

    ingest = load_settings(overrides=parse_assignment("ingest.band_range_nm=[500, 900]")).ingest
    assert ingest.band_range_nm == (500.0, 900.0)
    ingest = load_settings(overrides=parse_assignment("ingest.tivita_wavelength_range_nm=500,995")).ingest
    assert ingest.tivita_wavelength_range_nm == (500.0, 995.0)
    with pytest.raises(SettingsError, match="band_range_nm must be \\(lo, hi\\) with 0 < lo < hi nm"):
        load_settings(overrides=parse_assignment("ingest.band_range_nm=900,500"))
