"""Spectral-angle math against a float64 reference, zero spectra, band-count independence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.spectral.angles import (
    SpectralError,
    angle_to_similarity,
    reference_spectrum,
    sensor_noise,
    similarity_map,
    spectral_angles,
)


def reference_angles(cube: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Float64 textbook formula; zero-norm pixels defined as pi/2."""
    px = cube.reshape(-1, cube.shape[2]).astype(np.float64)
    r = refs.astype(np.float64)
    n = np.linalg.norm(px, axis=1)[:, None] * np.linalg.norm(r, axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(n > 0, px @ r.T / n, 0.0)
    return np.arccos(np.clip(cos, -1, 1)).reshape(*cube.shape[:2], -1)


finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


@hsettings(max_examples=100, deadline=None)
@given(st.integers(1, 64).flatmap(lambda b: st.tuples(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(b)), elements=finite),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(b)), elements=st.floats(0.0625, 5, width=32)))))
def test_matches_float64_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    cube, refs = data
    got = spectral_angles(cube, refs)
    assert got.dtype == np.float32 and got.shape == (*cube.shape[:2], refs.shape[0])
    assert np.all(np.isfinite(got)) and np.all(got >= 0) and np.all(got <= np.pi + 1e-6)
    # float32 arccos is ill-conditioned near 0; 2e-3 rad is far below any threshold the node uses
    np.testing.assert_allclose(got, reference_angles(cube, refs), atol=2e-3)


def test_zero_spectrum_pixels_are_defined() -> None:
    cube = np.ones((2, 3, 5), np.float32)
    cube[0, 1] = 0.0
    theta = spectral_angles(cube, np.ones((1, 5)))
    assert theta[0, 1, 0] == pytest.approx(np.pi / 2)
    assert theta[1, 2, 0] == pytest.approx(0.0, abs=1e-3)


def test_tiny_but_nonzero_spectra_keep_their_angle() -> None:
    cube = np.array([[[1e-45], [1e-45]], [[3e-30], [0.0]]], np.float32)  # subnormal; squares underflow
    theta = spectral_angles(cube, np.ones((1, 1)))
    np.testing.assert_allclose(theta[:, :, 0], [[0.0, 0.0], [0.0, np.pi / 2]], atol=1e-3)
    two = spectral_angles(np.array([[[1e-30, 2e-30, 0.0]]], np.float32), np.array([[1.0, 2.0, 0.0]]))
    assert two[0, 0, 0] < 1e-3


def test_angle_ignores_brightness() -> None:
    rng = np.random.default_rng(1)
    spectrum = rng.uniform(0.1, 0.9, 40).astype(np.float32)
    cube = np.stack([spectrum * s for s in (0.1, 0.5, 1.0, 3.0)])[None]
    theta = spectral_angles(cube, spectrum[None])
    np.testing.assert_allclose(theta, 0.0, atol=1e-3)


@pytest.mark.parametrize("bands", [1, 16, 100, 826])
def test_one_channel_per_reference_whatever_the_band_count(bands: int) -> None:
    wl = np.linspace(400, 1000, bands)
    tissue = 0.3 + 0.2 * np.tanh((wl - 600) / 40)
    other = 0.5 - 0.1 * np.tanh((wl - 700) / 60)
    cube = np.stack([np.tile(tissue, (4, 1)), np.tile(other, (4, 1))]).astype(np.float32)
    theta = spectral_angles(cube, tissue[None])
    assert theta.shape == (2, 4, 1)
    np.testing.assert_allclose(theta[0], 0.0, atol=1e-3)
    if bands > 1:  # a single band has no spectral shape: every angle is 0
        assert theta[1].min() > 0.1


def test_reference_needs_matching_bands_and_nonzero() -> None:
    cube = np.ones((2, 2, 4), np.float32)
    with pytest.raises(SpectralError, match="references have 3 bands, the cube has 4"):
        spectral_angles(cube, np.ones((1, 3)))
    with pytest.raises(SpectralError, match="zero or not finite"):
        spectral_angles(cube, np.zeros((1, 4)))
    with pytest.raises(SpectralError, match="H x W x B"):
        spectral_angles(cube[0], np.ones((1, 4)))


def test_reference_spectrum_averages_the_clicked_material_only_and_clips() -> None:
    rng = np.random.default_rng(0)
    shape = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    cube = (shape * rng.uniform(0.5, 1.5, size=(5, 6, 1))).astype(np.float32)  # one material, uneven brightness
    ref = reference_spectrum(cube, x=0, y=0, radius=1)  # corner: 2x2 patch
    np.testing.assert_allclose(ref, cube[:2, :2].reshape(-1, 4).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(reference_spectrum(cube, 3.4, 2.6, 0), cube[3, 3])
    target = np.array([4.0, 3.0, 2.0, 1.0], np.float32)
    cube[2, 2] = cube[2, 3] = cube[3, 2] = target  # a 3-pixel target: its reference is its own spectrum
    np.testing.assert_allclose(reference_spectrum(cube, 2, 2, 2), target, rtol=1e-6)
    with pytest.raises(SpectralError, match=r"click \(6, 1\) is outside the 6x5 image"):
        reference_spectrum(cube, 6, 1, 1)
    with pytest.raises(SpectralError, match="outside"):
        reference_spectrum(cube, -1, 1, 1)
    with pytest.raises(SpectralError, match="zero or not finite"):
        reference_spectrum(np.zeros((3, 3, 2), np.float32), 1, 1, 1)


def test_sensor_noise_is_the_added_noise_and_ignores_brightness() -> None:
    rng = np.random.default_rng(1)
    shape = np.linspace(0.2, 0.6, 50, dtype=np.float32)
    clean = shape * rng.uniform(0.7, 1.3, size=(80, 90, 1)).astype(np.float32)
    assert sensor_noise(clean) < 1e-6
    noisy = clean + rng.normal(0, 0.01, clean.shape).astype(np.float32)
    assert sensor_noise(noisy) == pytest.approx(0.01, rel=0.15)


def test_similarity_best_positive_and_negative_push_down() -> None:
    theta_pos = np.array([[[0.0, 1.0], [1.5, 0.2]]], np.float32)  # (1, 2, 2)
    s = similarity_map(theta_pos)
    np.testing.assert_allclose(s, [[1.0, 1 - 0.2 / (np.pi / 2)]], rtol=1e-6)
    theta_neg = np.array([[[0.5], [0.0]]], np.float32)  # second pixel equals a negative reference
    s2 = similarity_map(theta_pos, theta_neg)
    assert s2[0, 0] == pytest.approx(1.0)  # nearer its positive: unchanged
    assert s2[0, 1] < s[0, 1] - 0.1  # nearer the negative: pushed down by the margin
    assert angle_to_similarity(np.float32(np.pi)) == 0.0


def test_maps_spanning_many_blocks_match_the_reference_with_odd_pixels_in_every_block() -> None:
    from samsa_stream.spectral.angles import _BLOCK, PixelSpectra

    rng = np.random.default_rng(3)
    n = 3 * _BLOCK + 5  # the last block is short
    cube = rng.uniform(0.05, 0.95, (n, 1, 6)).astype(np.float32)
    cube[[0, _BLOCK, 2 * _BLOCK + 7, n - 1]] = 0.0  # zero spectra in several blocks
    cube[[5, _BLOCK + 3, n - 2]] *= np.float32(1e-20)  # squares underflow float32
    refs = rng.uniform(0.1, 1.0, (2, 6)).astype(np.float32)
    spectra = PixelSpectra.of(cube)
    first = spectra.angles(refs[:1])
    again = spectra.angles(refs)  # the norms kept from the first map
    expected = reference_angles(cube, refs)
    np.testing.assert_allclose(first[..., 0], expected[..., 0], atol=2e-3)
    np.testing.assert_allclose(again, expected, atol=2e-3)
    np.testing.assert_allclose(again[..., :1], first, atol=1e-5)  # one reference or two: other BLAS kernels
    np.testing.assert_allclose(again[[0, _BLOCK, n - 1], 0], np.pi / 2, atol=1e-6)
    np.testing.assert_allclose(again[[5, _BLOCK + 3, n - 2]], expected[[5, _BLOCK + 3, n - 2]], atol=1e-5)


def test_a_float16_cube_gives_the_angles_of_its_values() -> None:
    rng = np.random.default_rng(4)
    cube = rng.uniform(0.05, 0.95, (40, 300, 12)).astype(np.float16)
    refs = rng.uniform(0.1, 1.0, (2, 12)).astype(np.float32)
    np.testing.assert_array_equal(spectral_angles(cube, refs), spectral_angles(cube.astype(np.float32), refs))
