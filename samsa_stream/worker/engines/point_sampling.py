"""Where to put point prompts derived from maps (a previous mask, a spectral-similarity region).

Pure functions on small 2-D numpy arrays (the decoder's low-res grid), so they cost microseconds.
Points are (row, col) on the array they were chosen from.
"""

from __future__ import annotations

import cv2
import numpy as np

Point = tuple[int, int]


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every region pixel to the nearest pixel outside it; 0 outside."""
    padded = np.pad(region.astype(np.uint8), 1)  # the array border counts as outside
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> Point | None:
    """The pixel of ``mask`` farthest from its boundary (SAM's preferred click spot), None if empty."""
    if not mask.any():
        return None
    depth = _distance_inside(mask)
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(row), int(col)


def spread_points(region: np.ndarray, count: int, score: np.ndarray | None = None, min_depth: float = 1.0,
                  exclude: list[Point] | None = None) -> list[Point]:
    """Up to ``count`` well-separated points of ``region``, each at least ``min_depth`` inside it.

    Points are taken best ``score`` first (default: deepest inside the region); the disc around
    each pick and around every ``exclude`` point is left out, so points cover the region instead
    of clustering on an existing click.
    """
    if count <= 0 or not region.any():
        return []
    depth = _distance_inside(region)
    allowed = depth >= min_depth
    rank = depth if score is None else score.astype(np.float32)
    rows, cols = np.indices(region.shape)
    radius = max(2.0, 0.1 * max(region.shape))

    def drop_disc(row: int, col: int) -> None:
        allowed[(rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2] = False

    for row, col in exclude or []:
        drop_disc(row, col)
    points: list[Point] = []
    while len(points) < count and allowed.any():
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(np.where(allowed, rank, -np.inf))), region.shape))
        points.append((row, col))
        drop_disc(row, col)
    return points


def regions_touching(region: np.ndarray, anchors: list[Point]) -> np.ndarray:
    """The connected parts of ``region`` that contain one of ``anchors`` (8-connectivity)."""
    count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    h, w = region.shape
    for row, col in anchors:
        if 0 <= row < h and 0 <= col < w:
            keep[labels[row, col]] = True
    keep[0] = False
    return keep[labels]


def nearest_to(anchors: list[Point], shape: tuple[int, int]) -> np.ndarray:
    """Negative distance of every pixel to the nearest anchor (higher = closer), for ``spread_points``."""
    rows, cols = np.indices(shape)
    best = np.full(shape, np.inf, dtype=np.float32)
    for row, col in anchors:
        best = np.minimum(best, np.hypot(rows - row, cols - col).astype(np.float32))
    return -best
