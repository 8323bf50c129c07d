"""The receive-side finiteness check of a cube: every NaN/inf found, in any block, in either dtype."""

from __future__ import annotations

import numpy as np
import pytest

from samsa_stream.protocol.messages import _FINITE_BLOCK, count_nonfinite


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_nonfinite_value_is_counted_wherever_it_lies(dtype: type) -> None:
    rows = 3 * _FINITE_BLOCK // 16 + 3  # several blocks of spectra and a short last one
    cube = np.random.default_rng(0).random((rows, 16, 5)).astype(dtype)
    assert count_nonfinite(cube) == 0
    cube[0, 0, 0] = np.nan
    cube[rows // 2, 7, 4] = np.inf
    cube[rows - 1, 15, 2] = -np.inf
    assert count_nonfinite(cube) == 3


def test_sums_that_overflow_are_checked_value_by_value() -> None:
    cube = np.full((4, 4, 8), 3e38, dtype=np.float32)  # every spectrum's sum overflows; every value is finite
    assert count_nonfinite(cube) == 0
    cube[1, 2, 3] = np.nan
    assert count_nonfinite(cube) == 1


def test_a_strided_view_is_checked_too() -> None:
    cube = np.zeros((10, 12, 6), dtype=np.float32)
    cube[3, 4, 1] = np.nan
    view = cube[:, ::2]
    assert not view.flags.c_contiguous
    assert count_nonfinite(view) == 1
