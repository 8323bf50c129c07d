"""Raw counts -> reflectance: (raw - dark) / (white - dark), checked against values worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.ingest.calibration import calibrate, line_average
from samsa_stream.ingest.sources import SourceError


def test_hand_computed_values() -> None:
    # One line, two columns, two bands. Column 0 band 0: (60 - 10) / (110 - 10) = 0.5, etc.
    raw = np.array([[[60, 30], [20, 90]]], dtype=np.uint16)
    white = np.array([[[110, 50], [40, 100]]], dtype=np.uint16)
    dark = np.array([[[10, 10], [20, 10]]], dtype=np.uint16)
    out = calibrate(raw, white, dark)
    np.testing.assert_allclose(out.cube, [[[0.5, 0.5], [0.0, 80 / 90]]], rtol=1e-6)
    assert out.cube.dtype == np.float32 and out.guarded == 0


def test_references_are_averaged_over_lines_per_column() -> None:
    # White lines 100 and 300 average to 200 in column 0; 50 and 150 to 100 in column 1. Dark 0.
    white = np.array([[[100.0], [50.0]], [[300.0], [150.0]]])
    dark = np.zeros((3, 2, 1))
    raw = np.array([[[50.0], [50.0]], [[100.0], [25.0]]])
    out = calibrate(raw, white, dark)
    np.testing.assert_allclose(out.cube[..., 0], [[0.25, 0.5], [0.5, 0.25]])
    np.testing.assert_allclose(line_average(white, 2, 1, "w"), [[200.0], [100.0]])


def test_single_spectrum_references_apply_to_every_column() -> None:
    raw = np.full((2, 3, 2), 55.0)
    out = calibrate(raw, np.array([105.0, 205.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(out.cube, np.broadcast_to([0.5, 0.25], (2, 3, 2)))


def test_zero_and_negative_denominators_are_guarded_and_counted() -> None:
    raw = np.full((2, 3, 1), 50.0)
    white = np.array([[[100.0], [10.0], [5.0]]])  # column 1: white == dark; column 2: white < dark
    dark = np.array([[[0.0], [10.0], [20.0]]])
    with np.errstate(all="raise"):  # no division by zero happens at all
        out = calibrate(raw, white, dark)
    np.testing.assert_array_equal(out.cube[..., 0], [[0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])
    assert out.guarded == 2


def test_clipped_to_unit_range_and_white_panel_reflectance() -> None:
    raw = np.array([[[0.0, 50.0, 150.0, 100.0]]])
    white = np.full(4, 100.0)
    dark = np.full(4, 10.0)
    np.testing.assert_allclose(calibrate(raw, white, dark).cube, [[[0.0, 40 / 90, 1.0, 1.0]]], rtol=1e-6)
    # A 95 % panel: the white itself is 0.95 reflectance.
    np.testing.assert_allclose(calibrate(raw, white, dark, white_reflectance=0.95).cube[0, 0, 3], 0.95, rtol=1e-6)


def test_raw_input_is_not_modified() -> None:
    raw = np.full((1, 1, 2), 7, dtype=np.uint16)
    raw.flags.writeable = False  # as a memory-mapped file would be
    calibrate(raw, np.full(2, 10), np.zeros(2))
    assert raw[0, 0, 0] == 7


@pytest.mark.parametrize("white,dark,message", [
    (np.ones((2, 3)), np.zeros(3), "white reference: 3 band(s), the raw cube has 4"),
    (np.ones((5, 4)), np.zeros(4), "white reference: 5 column(s), the raw cube has 2"),
    (np.ones(4), np.zeros((1, 1, 1, 4)), "dark reference: expected lines x columns x bands"),
    (np.ones(4).astype(complex), np.zeros(4), "white reference: dtype complex128 is not numeric"),
])
def test_mismatched_references_are_refused(white: np.ndarray, dark: np.ndarray, message: str) -> None:
    with pytest.raises(SourceError, match="frame 3: " + message.replace("(", r"\(").replace(")", r"\)")):
        calibrate(np.ones((1, 2, 4)), white, dark, where="frame 3")


@hsettings(max_examples=50, deadline=None)
@given(reflectance=hnp.arrays(np.float64, (3, 4, 5), elements=st.floats(0, 1)),
       dark=hnp.arrays(np.float64, (4, 5), elements=st.floats(0, 500)),
       span=hnp.arrays(np.float64, (4, 5), elements=st.floats(1, 4000)))
def test_recovers_the_reflectance_that_made_the_counts(reflectance: np.ndarray, dark: np.ndarray,
                                                       span: np.ndarray) -> None:
    raw = dark + reflectance * span
    out = calibrate(raw, (dark + span)[None], dark[None])
    # Float32 arithmetic: counts carry ~6e-8 relative error, magnified by count level / white-dark span.
    tolerance = 4 * np.finfo(np.float32).eps * float(((dark + span) / span).max())
    np.testing.assert_allclose(out.cube, reflectance, atol=tolerance)
    assert out.cube.min() >= 0 and out.cube.max() <= 1
