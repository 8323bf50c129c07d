"""The simulated-click protocol on hand-made masks, and its invariants on random ones."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.evaluation import EvaluationError
from samsa_stream.evaluation.clicks import SimulatedClick, first_click, next_click


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_click_coordinates() -> None:
    click = SimulatedClick(row=3, col=7, positive=False)
    assert (click.x, click.y) == (7.0, 3.0)


def test_first_click_at_centre_of_square() -> None:
    click = first_click(square((20, 30), 5, 10, 9))
    assert click == SimulatedClick(9, 14, True)


def test_first_click_at_centre_of_ellipse() -> None:
    mask = np.zeros((41, 61), np.uint8)
    cv2.ellipse(mask, (30, 20), (14, 10), 0, 0, 360, 1, -1)
    assert first_click(mask) == SimulatedClick(20, 30, True)
    long = np.zeros((41, 61), np.uint8)
    cv2.ellipse(long, (30, 20), (20, 9), 0, 0, 360, 1, -1)
    click = first_click(long)  # a flat ridge along the major axis: its first pixel in raster order
    assert click.row == 20 and 26 <= click.col <= 30


def test_first_click_in_widest_part_of_l_shape() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:28, 2:6] = True  # thin vertical bar
    mask[18:28, 2:28] = True  # thick foot: 10 rows high
    click = first_click(mask)
    assert 18 <= click.row < 28 and click.col >= 6
    assert click.row in (22, 23)  # the foot's middle rows


def test_first_click_in_bigger_bulb_of_dumbbell() -> None:
    mask = np.zeros((30, 60), np.uint8)
    cv2.circle(mask, (12, 15), 6, 1, -1)
    cv2.circle(mask, (44, 15), 10, 1, -1)
    mask[14:17, 12:44] = 1  # narrow bar between the bulbs
    assert first_click(mask) == SimulatedClick(15, 44, True)


def test_first_click_counts_image_border_as_boundary() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[:, :12] = True  # touches three image edges: the deepest pixel is not at the left edge
    click = first_click(mask)
    assert click.col >= 4 and click.row in (4, 5)


def test_first_click_ties_break_in_raster_order() -> None:
    mask = np.zeros((5, 12), dtype=bool)
    mask[1:4, 1:4] = True
    mask[1:4, 7:10] = True  # same depth: the first in raster order wins
    assert first_click(mask) == SimulatedClick(2, 2, True)


def test_next_click_positive_in_miss() -> None:
    gt = square((30, 30), 5, 5, 20)
    pred = gt.copy()
    pred[5:25, 15:25] = False  # the right half is missed
    click = next_click(gt, pred)
    assert click is not None and click.positive
    assert gt[click.row, click.col] and not pred[click.row, click.col]
    assert click.col >= 15


def test_next_click_negative_in_false_alarm() -> None:
    gt = square((30, 30), 2, 2, 8)
    pred = gt | square((30, 30), 15, 15, 9)
    assert next_click(gt, pred) == SimulatedClick(19, 19, False)


def test_next_click_picks_largest_region() -> None:
    gt = square((40, 40), 2, 2, 20)
    pred = gt.copy()
    pred[2:5, 2:5] = False  # small miss: 9 px
    pred |= square((40, 40), 28, 28, 6)  # bigger false alarm: 36 px
    pred |= square((40, 40), 30, 2, 3)  # small false alarm
    assert next_click(gt, pred) == SimulatedClick(30, 30, False)
    pred[10:22, 10:22] = False  # now a 144 px miss is the largest
    click = next_click(gt, pred)
    assert click is not None and click.positive and 10 <= click.row < 22 and 10 <= click.col < 22


def test_equal_area_miss_wins_over_false_alarm() -> None:
    gt = square((20, 20), 10, 10, 6)
    pred = gt.copy()
    pred[12:15, 12:15] = False  # 9 px miss, later in raster order
    pred |= square((20, 20), 1, 1, 3)  # 9 px false alarm, earlier in raster order
    assert next_click(gt, pred) == SimulatedClick(13, 13, True)


def test_equal_area_regions_in_raster_order() -> None:
    gt = square((20, 20), 15, 15, 2)
    pred = gt | square((20, 20), 8, 1, 3) | square((20, 20), 2, 12, 3)
    assert next_click(gt, pred) == SimulatedClick(3, 13, False)


def test_regions_are_eight_connected() -> None:
    gt = square((20, 20), 15, 15, 2)
    pred = gt.copy()
    pred[[1, 2, 3, 4], [1, 2, 3, 4]] = True  # a diagonal line: one region of 4 px
    pred[10, 1:4] = True  # a straight line of 3 px
    click = next_click(gt, pred)
    assert click is not None and click.row == click.col and 1 <= click.row <= 4


def test_never_repeats_a_clicked_pixel() -> None:
    gt = np.zeros((10, 10), dtype=bool)
    gt[5, 5] = True  # a one-pixel object, missed
    pred = np.zeros_like(gt)
    assert next_click(gt, pred) == SimulatedClick(5, 5, True)
    assert next_click(gt, pred, clicked=[(5, 5)]) is None
    pred[0:2, 0:2] = True  # a 4 px false alarm, larger than the miss but all clicked
    assert next_click(gt, pred, clicked={(0, 0), (0, 1), (1, 0), (1, 1)}) == SimulatedClick(5, 5, True)
    pred[1:3, 7:9] = True  # a second 4 px false alarm
    assert next_click(gt, pred, clicked=[(0, 0), (0, 1), (1, 0), (1, 1)]) == SimulatedClick(1, 7, False)


def test_clicked_pixel_moves_click_within_region() -> None:
    gt = square((30, 30), 5, 5, 9)
    pred = np.zeros_like(gt)
    assert next_click(gt, pred) == SimulatedClick(9, 9, True)
    click = next_click(gt, pred, clicked=[(9, 9)])
    assert click is not None and click.positive and (click.row, click.col) != (9, 9) and gt[click.row, click.col]


def test_none_when_perfect() -> None:
    gt = square((12, 12), 3, 3, 4)
    assert next_click(gt, gt.astype(np.uint8)) is None


@pytest.mark.parametrize(("gt", "pred", "clicked", "problem"), [
    (np.zeros((4, 4)), np.zeros((4, 4)), (), "no pixels"),
    (np.ones((4, 4)), np.ones((4, 5)), (), "shape"),
    (np.ones((4, 4, 1)), np.ones((4, 4, 1)), (), "2-D"),
    (np.array([["a"]]), np.array([["a"]]), (), "dtype"),
    (np.full((2, 2), np.nan), np.ones((2, 2)), (), "NaN"),
    (np.ones((4, 4)), np.zeros((4, 4)), [(4, 0)], "outside"),
    (np.ones((4, 4)), np.zeros((4, 4)), [(1,)], "(row, col) pair"),
    (np.ones((4, 4)), np.zeros((4, 4)), [(1.5, 2)], "integer"),
])
def test_bad_input_names_the_problem(gt: np.ndarray, pred: np.ndarray, clicked: list, problem: str) -> None:
    with pytest.raises(EvaluationError, match=re.escape(problem)):
        next_click(gt, pred, clicked)


def test_first_click_needs_an_object() -> None:
    with pytest.raises(EvaluationError, match="object has no pixels"):
        first_click(np.zeros((5, 5), dtype=bool))


masks = hnp.arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@hsettings(max_examples=200, deadline=None)
@given(st.data())
def test_click_lands_in_an_error_with_matching_sign(data: st.DataObject) -> None:
    gt = data.draw(masks.filter(lambda m: m.any()), label="gt")
    pred = data.draw(hnp.arrays(bool, st.just(gt.shape)), label="pred")
    pixels = st.tuples(st.integers(0, gt.shape[0] - 1), st.integers(0, gt.shape[1] - 1))
    clicked = data.draw(st.sets(pixels, max_size=gt.size), label="clicked")
    click = next_click(gt, pred, clicked)
    error = gt != pred
    if click is None:
        # Nothing left to click: every error pixel was already clicked.
        assert all((r, c) in clicked for r, c in zip(*np.nonzero(error), strict=True))
        return
    assert error[click.row, click.col]
    assert click.positive == bool(gt[click.row, click.col])
    assert (click.row, click.col) not in clicked
    # Unclicked errors exist in no bigger region than the chosen one.
    kind = gt & ~pred if click.positive else pred & ~gt
    _, labels = cv2.connectedComponents(kind.astype(np.uint8), connectivity=8)
    chosen = int((labels == labels[click.row, click.col]).sum())
    for mistake in (gt & ~pred, pred & ~gt):
        count, regions = cv2.connectedComponents(mistake.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            region = regions == label
            if any(region[r, c] for r, c in zip(*np.nonzero(region), strict=True) if (r, c) not in clicked):
                assert int(region.sum()) <= chosen


@hsettings(max_examples=100, deadline=None)
@given(masks.filter(lambda m: m.any()))
def test_first_click_is_inside_and_deepest(gt: np.ndarray) -> None:
    click = first_click(gt)
    assert click.positive and gt[click.row, click.col]
    # Brute force: distance to the nearest pixel outside the object, the frame around the image included.
    outside = np.argwhere(~np.pad(gt, 1)) - 1
    def depth(r: int, c: int) -> float:
        return float(np.sqrt(((outside - (r, c)) ** 2).sum(axis=1)).min())
    best = max(depth(r, c) for r, c in np.argwhere(gt))
    assert depth(click.row, click.col) == pytest.approx(best, abs=1e-4)


def test_equally_deep_pixels_are_exactly_equal_so_ties_go_to_raster_order() -> None:
    """Depths are squared distances between pixel centres (integers): two 7x7 squares give the same
    depth at both centres, and the upper square's centre is the click, whatever the transform's rounding."""
    from samsa_stream.evaluation.clicks import _depth

    truth = np.zeros((30, 12), bool)
    truth[3:10, 2:9] = truth[18:25, 2:9] = True
    depth = _depth(truth)
    assert depth.dtype.kind == "i" and depth[6, 5] == depth[21, 5] == 16  # 4 pixels to the outside
    assert first_click(truth) == SimulatedClick(6, 5, True)
    upper = truth.copy()
    upper[15:] = False
    assert next_click(truth, upper, {(6, 5)}) == SimulatedClick(21, 5, True)
