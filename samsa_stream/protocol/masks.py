"""Compact mask encoding: run lengths over the row-major (C order) flattened mask.

``counts[0]`` is the length of the first run of 0 (possibly 0), then runs alternate
1, 0, 1, ...; the counts sum to H * W. Stored as little-endian uint32.
"""

from __future__ import annotations

import numpy as np

from .codec import ProtocolError


def rle_encode(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask -> uint32 run lengths."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return np.zeros(1, dtype=np.uint32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.uint32)


def rle_decode(counts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint32 run lengths -> boolean mask of ``shape``; raises ProtocolError if they do not add up."""
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.dtype.kind not in "ui":
        raise ProtocolError(f"mask run lengths must be a 1-D integer array, got {counts.dtype} {counts.shape}")
    h, w = shape
    total = int(counts.sum(dtype=np.int64))
    if total != h * w:
        raise ProtocolError(f"mask run lengths add up to {total} pixels, expected {h}x{w}={h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts.astype(np.int64)).reshape(h, w)
