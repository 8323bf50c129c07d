"""Blocked calibration and count scaling equal the one-pass formulas bit for bit (NaN and -0 included)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.ingest.calibration import calibrate, clip_unit, scale_counts


def plain_calibrate(raw: np.ndarray, white: np.ndarray, dark: np.ndarray) -> np.ndarray:
    white_cols = white.mean(axis=0, dtype=np.float64).astype(np.float32)
    dark_cols = dark.mean(axis=0, dtype=np.float64).astype(np.float32)
    span = white_cols - dark_cols
    guarded = ~(span > 0)
    gain = np.where(guarded, np.float32(0.0), np.float32(1.0) / np.where(guarded, 1.0, span)).astype(np.float32)
    out = np.subtract(raw, dark_cols, dtype=np.float32)
    np.multiply(out, gain, out=out)
    np.minimum(out, np.float32(1.0), out=out)
    np.maximum(out, np.float32(0.0), out=out)
    return out


@hsettings(max_examples=80, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 9), b=st.integers(1, 9), dtype=st.sampled_from([">u2", "<i2", "<f4"]),
       seed=st.integers(0, 2**16))
def test_blocked_calibration_equals_the_plain_formula(h: int, w: int, b: int, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 4000, (h, w, b)).astype(dtype)
    if raw.dtype.kind == "f":
        raw[rng.random(raw.shape) < 0.1] = np.nan
    white = rng.integers(1000, 4000, (2, w, b)).astype(np.uint16)
    dark = rng.integers(0, 2000, (2, w, b)).astype(np.uint16)  # some spans <= 0: guarded, -0 products
    bil = np.ascontiguousarray(raw.transpose(0, 2, 1)).transpose(0, 2, 1)
    got = calibrate(bil, white, dark).cube
    np.testing.assert_array_equal(got.view(np.uint32), plain_calibrate(raw, white, dark).view(np.uint32))


def test_clip_unit_is_minimum_then_maximum_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        rows = rng.normal(0, 1, tuple(rng.integers(1, 40, 3))).astype(np.float32)
        pick = rng.random(rows.shape)
        rows[pick < 0.2] = -0.0
        rows[pick > 0.95] = np.nan
        expected = np.maximum(np.minimum(rows, np.float32(1.0)), np.float32(0.0))
        clip_unit(rows)
        np.testing.assert_array_equal(rows.view(np.uint32), expected.view(np.uint32))


def test_blocked_count_scaling_equals_the_plain_formula() -> None:
    raw = np.random.default_rng(6).integers(0, 65536, (7, 5, 3)).astype(">u2")
    expected = np.multiply(raw, np.float32(1.0 / 65535), dtype=np.float32)
    expected = np.maximum(np.minimum(expected, np.float32(1.0)), np.float32(0.0))
    np.testing.assert_array_equal(scale_counts(raw.transpose(0, 2, 1).copy().transpose(0, 2, 1)).cube, expected)
