"""Pseudo-RGB: colorimetric (CIE 1931, D65, sRGB) and band-window projections, exposure modes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.spectral.colorimetry import cie_tables, colorimetric_weights, xyz_weights
from samsa_stream.spectral.pseudo_rgb import PROJECTIONS, band_window_weights, choose_projection, render_pseudo_rgb

GRIDS = {
    "helicoid-826": np.linspace(400.0, 1000.0, 826),
    "vis-nir-2nm": np.arange(400.0, 1001.0, 2.0),
    "cie-5nm": np.arange(380.0, 781.0, 5.0),
    "tivita-100": np.linspace(500.0, 1000.0, 100),
    "snapshot-16": np.linspace(470.0, 630.0, 16),
    "snapshot-25": np.linspace(600.0, 975.0, 25),
}


def _render(spectrum: np.ndarray, wavelengths: np.ndarray, **kwargs: object) -> np.ndarray:
    return render_pseudo_rgb(np.asarray(spectrum, np.float32)[None, None, :], wavelengths, **kwargs)[0, 0]


@pytest.mark.parametrize("grid", GRIDS)
def test_flat_fifty_percent_reflector_is_neutral_grey(grid: str) -> None:
    wl = GRIDS[grid]
    rgb = _render(np.full(wl.size, 0.5), wl)
    # sRGB encoding of linear 0.5 is 0.7354 -> 188 of 255.
    np.testing.assert_array_equal(rgb, [188, 188, 188])


@pytest.mark.parametrize("level", [0.0, 0.05, 0.1, 0.18, 0.25, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("projection", ["colorimetric", "windows"])
def test_common_grey_levels_are_exactly_neutral(level: float, grid: str, projection: str) -> None:
    rgb = _render(np.full(GRIDS[grid].size, level), GRIDS[grid], projection=projection)
    assert rgb[0] == rgb[1] == rgb[2]


@hsettings(max_examples=60, deadline=None)
@given(level=st.floats(0.0, 1.0), grid=st.sampled_from(sorted(GRIDS)),
       projection=st.sampled_from(["colorimetric", "windows"]))
def test_any_flat_reflector_is_grey_under_either_projection(level: float, grid: str, projection: str) -> None:
    rgb = _render(np.full(GRIDS[grid].size, level), GRIDS[grid], projection=projection).astype(int)
    # Float rounding may split a level that lies exactly on a LUT cell edge by one step, never more.
    assert rgb.max() - rgb.min() <= 1


def test_projection_choice_follows_the_band_coverage() -> None:
    assert choose_projection(GRIDS["helicoid-826"]) == "colorimetric"
    assert choose_projection(GRIDS["cie-5nm"]) == "colorimetric"
    assert choose_projection(GRIDS["tivita-100"]) == "windows"  # nothing below 500 nm
    assert choose_projection(GRIDS["snapshot-16"]) == "windows"
    assert set(PROJECTIONS) >= {"colorimetric", "windows"}


def test_perfect_white_under_d65_has_y_one_and_the_d65_chromaticity() -> None:
    xyz = np.ones(81) @ xyz_weights(np.arange(380.0, 781.0, 5.0))
    assert xyz[1] == pytest.approx(1.0)
    # CIE D65 white point, 2-degree observer: x = 0.3127, y = 0.3290.
    assert xyz[0] / xyz.sum() == pytest.approx(0.3127, abs=2e-4)
    assert xyz[1] / xyz.sum() == pytest.approx(0.3290, abs=2e-4)


def test_bands_outside_the_visible_range_get_no_weight() -> None:
    wl = GRIDS["vis-nir-2nm"]
    weights = colorimetric_weights(wl)
    assert np.all(weights[wl > 782] == 0)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-6)  # white -> (1, 1, 1)


# sRGB (0-255) of analytic reflectance spectra under D65, computed independently with the
# colour-science package 0.4.7 (sd_to_XYZ at 1 nm with the CIE 1931 2-degree observer and D65,
# then XYZ_to_sRGB); the node's result must agree within 3 levels.
KNOWN = {
    "red step": (lambda wl: np.where(wl >= 600, 0.8, 0.05), [217, 41, 57]),
    "green peak": (lambda wl: 0.05 + 0.6 * np.exp(-0.5 * ((wl - 540) / 30) ** 2), [23, 194, 55]),
    "blue ramp": (lambda wl: np.clip(0.9 - (wl - 400) / 300 * 0.8, 0.05, 0.9), [138, 191, 230]),
}


@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.parametrize("grid", ["helicoid-826", "vis-nir-2nm"])
def test_colorimetric_matches_an_independent_implementation(name: str, grid: str) -> None:
    spectrum, expected = KNOWN[name]
    wl = GRIDS[grid]
    rgb = _render(spectrum(wl), wl)
    assert np.abs(rgb.astype(int) - expected).max() <= 3, (rgb, expected)


def test_cie_tables_are_the_standard_ones() -> None:
    t = cie_tables()
    assert t.wavelengths_nm[0] == 380 and t.wavelengths_nm[-1] == 780 and np.all(np.diff(t.wavelengths_nm) == 5)
    assert t.d65[t.wavelengths_nm == 560][0] == pytest.approx(100.0)  # D65 is normalized to 100 at 560 nm
    assert t.cmf[t.wavelengths_nm == 555, 1][0] == pytest.approx(1.0)  # ybar peaks at 555 nm
    assert t.cmf[:, 0].argmax() == list(t.wavelengths_nm).index(600)  # xbar's main lobe peaks near 600 nm


def test_band_windows_fall_back_to_the_nearest_band() -> None:
    wl = np.array([600.0, 650.0, 700.0])  # no green or blue window band
    weights = band_window_weights(wl)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    assert weights[0, 1] == 1.0 and weights[0, 2] == 1.0


def test_fixed_exposure_does_not_depend_on_the_rest_of_the_frame() -> None:
    wl = GRIDS["tivita-100"]
    dim = np.full((2, 2, wl.size), 0.2, np.float32)
    bright = dim.copy()
    bright[0, 0] = 0.9
    assert _render(dim[0, 1], wl)[0] == render_pseudo_rgb(bright, wl)[0, 1, 0]  # no flicker
    frame_a = render_pseudo_rgb(dim, wl, exposure="frame")
    frame_b = render_pseudo_rgb(dim * 0.5, wl, exposure="frame")
    np.testing.assert_array_equal(frame_a, frame_b)  # per-frame stretch: brightness is normalized away
    assert frame_a[0, 0, 0] >= 254


def test_gain_and_bad_exposure() -> None:
    wl = GRIDS["tivita-100"]
    assert _render(np.full(wl.size, 0.25), wl, gain=2.0)[0] == 188  # 0.25 x 2 = 0.5
    with pytest.raises(ValueError, match="exposure must be 'fixed' or 'frame', got 'auto'"):
        _render(np.full(wl.size, 0.25), wl, exposure="auto")
