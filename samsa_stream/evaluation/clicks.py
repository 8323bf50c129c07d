"""Simulated clicks: the click protocol of the SAMSA papers (DESIGN section 7). Pure numpy + OpenCV.

The protocol is fixed so that numbers stay comparable with the papers:

- The first click is positive, at the ground-truth pixel farthest from the object's boundary.
- Each next click goes to the largest connected error region (8-connectivity; misses = gt and
  not pred, false alarms = pred and not gt, each split separately), at its pixel farthest from
  the region's boundary: positive for a miss, negative for a false alarm. On equal area a miss
  wins over a false alarm, then the region whose first pixel comes first in raster order.
- "Farthest from the boundary" is the exact Euclidean distance transform (cv2.DIST_L2,
  cv2.DIST_MASK_PRECISE) with the image border counted as boundary; ties go to the first
  pixel in raster order.
- A pixel already clicked is never clicked again: the next largest region is tried instead.

Masks are 2-D bool or numeric arrays (non-zero = inside). Coordinates are (row, col);
``SimulatedClick.x`` / ``.y`` give the (column, row) floats that prompts use.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np

from . import EvaluationError


@dataclass(frozen=True)
class SimulatedClick:
    """One simulated click at pixel (row, col); ``positive`` adds to the object, otherwise removes."""

    row: int
    col: int
    positive: bool

    @property
    def x(self) -> float:
        """The column, as prompts take it."""
        return float(self.col)

    @property
    def y(self) -> float:
        """The row, as prompts take it."""
        return float(self.row)


def first_click(gt: np.ndarray) -> SimulatedClick:
    """The positive click at the pixel of ``gt`` (2-D mask) farthest from the object's boundary."""
    mask = _as_mask(gt, "ground truth")
    if not mask.any():
        raise EvaluationError("cannot place a first click: the ground-truth object has no pixels")
    row, col = np.unravel_index(int(np.argmax(_depth(mask))), mask.shape)  # first maximum in raster order
    return SimulatedClick(int(row), int(col), True)


def next_click(gt: np.ndarray, pred: np.ndarray,
               clicked: Collection[tuple[int, int]] = ()) -> SimulatedClick | None:
    """The click that corrects the largest error of ``pred`` against ``gt`` (both 2-D masks, same shape).

    ``clicked`` holds the (row, col) pixels clicked so far; none of them is chosen again. Returns
    None when ``pred`` equals ``gt`` or every error pixel has already been clicked.
    """
    truth = _as_mask(gt, "ground truth")
    mask = _as_mask(pred, "prediction")
    if mask.shape != truth.shape:
        raise EvaluationError(f"prediction shape {mask.shape} differs from ground-truth shape {truth.shape}")
    if not truth.any():
        raise EvaluationError("cannot place a click: the ground-truth object has no pixels")
    taken = _clicked_mask(clicked, truth.shape)

    # (-area, miss first, first pixel in raster order, label map, label, bounding box) per error region
    regions: list[tuple[int, int, int, np.ndarray, int, tuple[slice, slice]]] = []
    for rank, error in ((0, truth & ~mask), (1, mask & ~truth)):
        if not error.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            left, top, width, height, area = (int(v) for v in stats[label])
            box = (slice(top, top + height), slice(left, left + width))
            # A region's first pixel in raster order lies in its top row.
            first = top * truth.shape[1] + left + int(np.argmax(labels[top, box[1]] == label))
            regions.append((-area, rank, first, labels, label, box))
    regions.sort(key=lambda r: r[:3])

    for _, rank, _, labels, label, box in regions:
        spot = _deepest(labels[box] == label, taken[box])
        if spot is not None:
            return SimulatedClick(box[0].start + spot[0], box[1].start + spot[1], rank == 0)
    return None


def _deepest(region: np.ndarray, taken: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the unclicked ``region`` pixel farthest from the region's boundary; None if all are clicked.

    ``region`` may be cut to its bounding box: every pixel around the box is outside the region,
    so distances inside the box are the same as in the whole image.
    """
    depth = _depth(region)
    depth[~region | taken] = -1
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)  # the first maximum in raster order
    if depth[row, col] < 0:
        return None
    return int(row), int(col)


def _depth(region: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance (int64) of each ``region`` pixel to the nearest pixel outside it; 0 outside.

    Squared distances between pixel centres are integers: rounding the exact transform's result to them
    makes equal depths exactly equal, so ties go to raster order whatever rounding the transform's
    threads left in the last bit (which otherwise picked one of two equally deep pixels at random)."""
    padded = np.pad(region.astype(np.uint8), 1)  # the image border counts as boundary
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1].astype(np.float64)
    return np.rint(distance * distance).astype(np.int64)


def _as_mask(array: np.ndarray, what: str) -> np.ndarray:
    """A 2-D bool mask from a bool or numeric array (non-zero = inside), or an error naming the problem."""
    values = np.asarray(array)
    if values.ndim != 2:
        raise EvaluationError(f"the {what} mask must be 2-D (rows, columns), got shape {values.shape}")
    if values.dtype == bool:
        return values
    if values.dtype.kind not in "iuf":
        raise EvaluationError(f"the {what} mask must be bool or numeric, got dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise EvaluationError(f"the {what} mask has NaN or infinite values")
    return values != 0


def _clicked_mask(clicked: Collection[tuple[int, int]], shape: tuple[int, ...]) -> np.ndarray:
    """The clicked pixels as a mask; each entry must be a (row, col) pair inside the image."""
    taken = np.zeros(shape, dtype=bool)
    for point in clicked:
        try:
            row, col = point
        except (TypeError, ValueError):
            raise EvaluationError(f"a clicked pixel must be a (row, col) pair, got {point!r}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (row, col)):
            raise EvaluationError(f"a clicked pixel must have integer (row, col), got {point!r}")
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise EvaluationError(f"clicked pixel (row {row}, col {col}) is outside the {shape[0]}x{shape[1]} mask")
        taken[row, col] = True
    return taken


__all__ = ["SimulatedClick", "first_click", "next_click"]
