"""Segmentation quality figures (DESIGN section 7): DICE, IoU, clicks to reach a target. Pure numpy.

Masks are compared as bool (non-zero = inside). Two empty masks agree perfectly (1.0), so an
object that is correctly left unsegmented does not count as a failure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import EvaluationError

_DROP = 1e-9  # a score lower than the previous one by more than this counts as a drop (not float noise)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """DICE coefficient 2|A∩B| / (|A| + |B|) of two masks of the same shape; 1.0 when both are empty."""
    a, b = _pair(pred, gt)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B| of two masks of the same shape; 1.0 when both are empty."""
    a, b = _pair(pred, gt)
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union else 1.0


def clicks_to_reach(scores: Sequence[float], target: float, budget: int) -> int:
    """Number of clicks (NoC) to reach ``target``: the 1-based index of the first of the first ``budget``
    scores that is >= ``target``; ``budget`` when none is.

    ``scores[k]`` is the score after click k + 1. A session that stopped early (fewer scores than
    ``budget``) without reaching the target still counts as ``budget``.
    """
    _check_target(target, budget)
    for index, score in enumerate(scores[:budget], start=1):
        if score >= target:
            return index
    return budget


def reached(scores: Sequence[float], target: float, budget: int) -> bool:
    """Whether any of the first ``budget`` scores is >= ``target``."""
    _check_target(target, budget)
    return any(score >= target for score in scores[:budget])


def dice_drops(scores: Sequence[float]) -> tuple[int, int]:
    """(clicks after the first that lowered the score below the previous one by more than 1e-9,
    clicks after the first): how often a correction click made things worse."""
    drops = sum(1 for before, after in zip(scores, scores[1:], strict=False) if after < before - _DROP)
    return drops, max(len(scores) - 1, 0)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays, or an error naming the shape mismatch."""
    a, b = np.asarray(pred), np.asarray(gt)
    if a.shape != b.shape:
        raise EvaluationError(f"prediction shape {a.shape} differs from ground-truth shape {b.shape}")
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def _check_target(target: float, budget: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise EvaluationError(f"the click budget must be a positive integer, got {budget!r}")
    if not math.isfinite(target):
        raise EvaluationError(f"the target score must be a finite number, got {target!r}")


__all__ = ["clicks_to_reach", "dice", "dice_drops", "iou", "reached"]
