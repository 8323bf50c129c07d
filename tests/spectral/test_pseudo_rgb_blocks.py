"""Blocked pseudo-RGB rendering equals the one-product formula exactly, block boundaries anywhere."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.spectral import pseudo_rgb
from samsa_stream.spectral.pseudo_rgb import _LUT_SIZE, _SRGB_LUT, project, render_pseudo_rgb, weighted_bands


def plain(cube: np.ndarray, weights: np.ndarray, exposure: str, gain: float) -> np.ndarray:
    linear = cube.reshape(-1, cube.shape[2]).astype(np.float32) @ weights
    scale = gain
    if exposure == "frame":
        top = float(np.percentile(linear, 99.0))
        scale = 1.0 / top if top > 0 else 1.0
    index = np.clip(linear * (scale * (_LUT_SIZE - 1)) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
    return _SRGB_LUT[index].reshape(cube.shape[0], cube.shape[1], 3)


@hsettings(max_examples=80, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 11), b=st.integers(1, 40), start=st.floats(380.0, 600.0),
       exposure=st.sampled_from(["fixed", "frame"]), gain=st.floats(0.5, 2.0), block_bytes=st.integers(1, 4096),
       dtype=st.sampled_from([np.float32, np.float16, np.float64]), seed=st.integers(0, 2**16))
def test_blocked_rendering_equals_the_plain_formula(h: int, w: int, b: int, start: float, exposure: str, gain: float,
                                                    block_bytes: int, dtype: type, seed: int) -> None:
    cube = np.random.default_rng(seed).uniform(0.0, 1.2, (h, w, b)).astype(dtype)
    wavelengths = start + 10.0 * np.arange(b)
    weights = pseudo_rgb.PROJECTIONS[pseudo_rgb.choose_projection(wavelengths)](wavelengths)
    saved = pseudo_rgb._BLOCK_BYTES
    pseudo_rgb._BLOCK_BYTES = block_bytes  # blocks of a row or a few, not dividing H
    try:
        got = render_pseudo_rgb(cube, wavelengths, exposure=exposure, gain=gain)
    finally:
        pseudo_rgb._BLOCK_BYTES = saved
    np.testing.assert_array_equal(got, plain(cube, weights, exposure, gain))


def test_projection_skips_only_unweighted_bands() -> None:
    weights = np.zeros((6, 3), np.float32)
    weights[1:4] = 0.25
    assert weighted_bands(weights) == slice(1, 4)
    pixels = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(project(pixels, weights), pixels @ weights)
    assert weighted_bands(np.zeros((4, 3))) == slice(0, 0)
    np.testing.assert_array_equal(project(pixels[:, :4], np.zeros((4, 3), np.float32)), np.zeros((2, 3)))
