"""The normalizer's one blocked pass equals the plain step-by-step computation, bit for bit."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.ingest import normalize
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources import Capture
from samsa_stream.settings import IngestSettings
from samsa_stream.spectral.pseudo_rgb import PROJECTIONS, choose_projection
from tests.spectral.test_pseudo_rgb_blocks import plain

from .builders import stored_view


def plain_rgb(cube: np.ndarray, wavelengths: np.ndarray, exposure: str) -> np.ndarray:
    return plain(cube, PROJECTIONS[choose_projection(wavelengths)](wavelengths), exposure, 1.0)


@hsettings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 9), b=st.integers(1, 30),
       layout=st.sampled_from(["bil", "bip", "tivita"]), dtype=st.sampled_from([">f4", "<f4", "<f2", ">f8"]),
       exposure=st.sampled_from(["fixed", "frame"]), bad=st.booleans(), rows=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_reflectance_frames_equal_the_plain_steps(h: int, w: int, b: int, layout: str, dtype: str, exposure: str,
                                                  bad: bool, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 1.0, (h, w, b))
    if bad:
        image[rng.integers(h), rng.integers(w), rng.integers(b)] = np.nan
    wavelengths = np.linspace(400.0, 1000.0, b) if b > 1 else np.array([550.0])
    view = stored_view(image, layout, dtype)
    with patch.object(normalize, "rows_per_block", lambda width, bands: rows):  # blocks not dividing H
        frame = Normalizer(IngestSettings(rgb_exposure=exposure))(Capture(cube=view, wavelengths_nm=wavelengths),
                                                                  "s", 1, 0)
    cube = np.ascontiguousarray(view, dtype=np.float32)
    finite = np.isfinite(cube)
    cube = np.where(finite, cube, np.float32(0))
    np.testing.assert_array_equal(frame.cube, cube)
    assert frame.source.get("nonfinite_replaced", 0) == np.count_nonzero(~finite)
    np.testing.assert_array_equal(frame.rgb, plain_rgb(cube, wavelengths, exposure))


def test_a_float32_cube_in_node_layout_is_not_copied_nor_written() -> None:
    cube = np.random.default_rng(1).uniform(0, 1, (5, 4, 6)).astype(np.float32)
    wavelengths = np.linspace(450.0, 700.0, 6)
    frame = Normalizer(IngestSettings())(Capture(cube=cube, wavelengths_nm=wavelengths), "s", 1, 0)
    assert frame.cube is cube
    cube[2, 1, 3] = np.inf
    kept = cube.copy()
    frame = Normalizer(IngestSettings())(Capture(cube=cube, wavelengths_nm=wavelengths), "s", 2, 0)
    np.testing.assert_array_equal(cube, kept)  # the capture's own array keeps its value
    assert frame.cube[2, 1, 3] == 0 and frame.source["nonfinite_replaced"] == 1
    np.testing.assert_array_equal(frame.rgb, plain_rgb(frame.cube, wavelengths, "fixed"))


def test_raw_counts_calibrate_in_the_same_pass() -> None:
    rng = np.random.default_rng(2)
    h, w, b = 13, 7, 9
    raw = rng.integers(0, 4000, (h, w, b)).astype(np.uint16)
    white = rng.integers(3000, 4000, (3, w, b)).astype(np.uint16)
    dark = rng.integers(0, 200, (3, w, b)).astype(np.uint16)
    white[:, 0, 0] = dark[:, 0, 0] = 100  # one guarded element
    wavelengths = np.linspace(400.0, 1000.0, b)
    view = stored_view(raw, "bil", ">u2")
    with patch.object(normalize, "rows_per_block", lambda width, bands: 4):
        frame = Normalizer(IngestSettings(dtype="float16"))(
            Capture(cube=view, wavelengths_nm=wavelengths, calibration="raw", white=white, dark=dark), "s", 1, 0)
    white_cols = white.mean(axis=0, dtype=np.float64).astype(np.float32)
    dark_cols = dark.mean(axis=0, dtype=np.float64).astype(np.float32)
    span = white_cols - dark_cols
    guarded = ~(span > 0)
    gain = np.where(guarded, np.float32(0), np.float32(1) / np.where(guarded, 1.0, span)).astype(np.float32)
    expected = np.subtract(raw, dark_cols, dtype=np.float32) * gain
    expected = np.maximum(np.minimum(expected, np.float32(1)), np.float32(0))
    assert frame.cube.dtype == np.float16
    np.testing.assert_array_equal(frame.cube, expected.astype(np.float16))
    np.testing.assert_array_equal(frame.rgb, plain_rgb(expected, wavelengths, "fixed"))
    assert frame.source["calibration_guarded"] == int(guarded.sum())


def test_scaled_counts_and_binning_take_the_staged_path_with_the_same_values() -> None:
    raw = np.random.default_rng(4).integers(0, 65535, (6, 8, 5)).astype(np.uint16)
    wavelengths = np.linspace(400.0, 1000.0, 5)
    frame = Normalizer(IngestSettings(raw_counts="scale", spatial_binning=2))(
        Capture(cube=stored_view(raw, "bsq", "<u2"), wavelengths_nm=wavelengths, calibration="raw"), "s", 1, 0)
    scaled = np.maximum(np.minimum(np.multiply(raw, np.float32(1 / 65535.0), dtype=np.float32), 1), 0)
    np.testing.assert_array_equal(frame.cube, scaled.reshape(3, 2, 4, 2, 5).mean(axis=(1, 3), dtype=np.float32))
