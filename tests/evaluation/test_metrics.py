"""DICE, IoU and clicks-to-target: hand-made cases and their algebraic properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.evaluation import EvaluationError
from samsa_stream.evaluation.metrics import clicks_to_reach, dice, dice_drops, iou, reached


def test_known_values() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0, :] = True  # 4 px
    b[0, :2] = True  # 2 px, inside a
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert iou(a, b) == pytest.approx(2 / 4)
    assert dice(a, ~a) == 0.0 and iou(a, ~a) == 0.0
    assert dice(a, a) == 1.0 and iou(a.astype(np.uint8), a) == 1.0


def test_both_empty_is_perfect() -> None:
    empty = np.zeros((3, 5), dtype=bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    full = ~empty
    assert dice(empty, full) == 0.0 and iou(full, empty) == 0.0


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(EvaluationError, match=r"shape \(3, 4\) differs from ground-truth shape \(4, 3\)"):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(EvaluationError, match="shape"):
        iou(np.zeros((3, 4)), np.zeros((3, 4, 1)))


pairs = st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
    lambda shape: st.tuples(hnp.arrays(bool, shape), hnp.arrays(bool, shape)))


@hsettings(max_examples=200, deadline=None)
@given(pairs)
def test_dice_and_iou_properties(masks: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = masks
    d, j = dice(a, b), iou(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == pytest.approx(2 * j / (1 + j))
    assert d == dice(b, a) and j == iou(b, a)
    assert (d == 1.0) == bool(np.array_equal(a, b))
    assert j <= d


def test_clicks_to_reach() -> None:
    scores = [0.5, 0.84, 0.86, 0.91, 0.95]
    assert clicks_to_reach(scores, 0.85, 20) == 3
    assert clicks_to_reach(scores, 0.90, 20) == 4
    assert clicks_to_reach(scores, 0.5, 20) == 1
    assert clicks_to_reach(scores, 0.90, 3) == 3  # reached only after the budget
    assert clicks_to_reach(scores, 0.99, 20) == 20  # never reached, session stopped early
    assert clicks_to_reach([], 0.85, 5) == 5
    assert clicks_to_reach([0.85], 0.85, 5) == 1  # >= target counts


def test_reached() -> None:
    scores = [0.5, 0.84, 0.86]
    assert reached(scores, 0.85, 3) and not reached(scores, 0.85, 2)
    assert not reached([], 0.1, 4)


@pytest.mark.parametrize("budget", [0, -1, 2.5, True])
def test_bad_budget_is_named(budget: object) -> None:
    with pytest.raises(EvaluationError, match="budget"):
        clicks_to_reach([0.9], 0.85, budget)  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="budget"):
        reached([0.9], 0.85, budget)  # type: ignore[arg-type]


def test_bad_target_is_named() -> None:
    with pytest.raises(EvaluationError, match="target"):
        clicks_to_reach([0.9], float("nan"), 5)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=20), st.floats(0, 1), st.integers(1, 25))
def test_clicks_to_reach_agrees_with_reached(scores: list[float], target: float, budget: int) -> None:
    noc = clicks_to_reach(scores, target, budget)
    assert 1 <= noc <= budget
    if reached(scores, target, budget):
        assert scores[noc - 1] >= target and all(s < target for s in scores[:noc - 1])
    else:
        assert noc == budget


def test_dice_drops() -> None:
    assert dice_drops([]) == (0, 0)
    assert dice_drops([0.7]) == (0, 0)
    assert dice_drops([0.5, 0.7, 0.6, 0.6, 0.9, 0.8]) == (2, 5)
    assert dice_drops([0.5, 0.5 - 1e-12, 0.7]) == (0, 2)  # float noise is not a drop
