"""Raw sensor counts -> reflectance with white and dark references (DESIGN section 3), or, when a
capture has none and ``ingest.raw_counts = "scale"``, counts scaled to [0, 1] (``scale_counts``).

    reflectance = white_reflectance * (raw - dark) / (white - dark), clipped to [0, 1]

References are averaged over their line axis (rows), giving one spectrum per detector column:
a push-broom camera's column is one detector element, which sees every line of the scan. A
(column, band) element whose white is not above its dark (dead or saturated) is guarded: its
reflectance is 0 and it is counted, never a division by zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .capture import SourceError
from .formats import read_capture


@dataclass(frozen=True)
class Calibrated:
    """A calibrated cube and how many (column, band) detector elements were guarded."""

    cube: np.ndarray  # (H, W, B) float32 in [0, 1] (NaN where the raw was NaN)
    guarded: int


def line_average(reference: np.ndarray, width: int, bands: int, what: str) -> np.ndarray:
    """Reference (L, W, B), (W, B) or (B,) -> float32 (W, B) or (1, B) per-column spectra.

    ``width`` and ``bands`` are the raw cube's; ``what`` names the reference in errors.
    """
    ref = np.asarray(reference)
    if ref.dtype.kind not in "fiu":
        raise SourceError(f"{what}: dtype {ref.dtype} is not numeric")
    if ref.ndim == 3:
        ref = ref.mean(axis=0, dtype=np.float64)  # average over lines
    elif ref.ndim == 1:
        ref = ref[None, :]
    elif ref.ndim != 2:
        raise SourceError(f"{what}: expected lines x columns x bands, columns x bands or bands; got shape {ref.shape}")
    if ref.shape[1] != bands:
        raise SourceError(f"{what}: {ref.shape[1]} band(s), the raw cube has {bands}")
    if ref.shape[0] not in (1, width):
        raise SourceError(f"{what}: {ref.shape[0]} column(s), the raw cube has {width} (or give one spectrum)")
    return np.ascontiguousarray(ref, dtype=np.float32)


def calibrate(raw: np.ndarray, white: np.ndarray, dark: np.ndarray, white_reflectance: float = 1.0,
              where: str = "capture") -> Calibrated:
    """Raw counts (H, W, B) -> reflectance with references shaped as ``line_average`` accepts.

    ``white_reflectance`` is the reflectance of the white panel (1.0 for an ideal one).
    Raises SourceError (naming ``where``) when the shapes do not fit together.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise SourceError(f"{where}: raw cube must be H x W x B, got shape {raw.shape}")
    if not 0 < white_reflectance <= 1:
        raise SourceError(f"{where}: white panel reflectance must be in (0, 1], got {white_reflectance}")
    _, w, b = raw.shape
    white_cols = line_average(white, w, b, f"{where}: white reference")
    dark_cols = line_average(dark, w, b, f"{where}: dark reference")
    span = white_cols - dark_cols
    guarded = ~(span > 0)  # also catches NaN references
    gain = np.where(guarded, np.float32(0.0), np.float32(white_reflectance) / np.where(guarded, 1.0, span))
    out = np.empty(raw.shape, dtype=np.float32)  # C order whatever the raw's layout; the raw may be read-only
    np.subtract(raw, dark_cols, out=out, dtype=np.float32)
    np.multiply(out, gain.astype(np.float32), out=out)
    np.minimum(out, np.float32(1.0), out=out)  # minimum/maximum keep NaN, as clip does, and are faster
    np.maximum(out, np.float32(0.0), out=out)
    # Broadcast count: a guarded (column, band) element spoils that element on every line.
    count = int(np.count_nonzero(np.broadcast_to(guarded, (w, b))))
    return Calibrated(cube=out, guarded=count)


def load_reference(path: Path, what: str) -> np.ndarray:
    """The cube of the first capture in ``path`` (any supported format), for a white or dark reference
    that is shared by every capture of a session (``ingest.white_reference`` / ``dark_reference``)."""
    try:
        return np.asarray(read_capture(path, 0).cube)
    except SourceError as exc:
        raise SourceError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class ScaledCounts:
    """Raw counts scaled to [0, 1] without references, and what they were divided by."""

    cube: np.ndarray  # (H, W, B) float32 in [0, 1] (NaN where the raw was NaN)
    divisor: float
    basis: str  # e.g. "uint16 range"


def scale_counts(raw: np.ndarray, percentile: float = 99.9) -> ScaledCounts:
    """Raw counts -> [0, 1] float32 without references (``ingest.raw_counts = "scale"``).

    Integer counts are divided by their dtype's maximum, float counts by the frame's ``percentile``
    (they have no fixed range); the result is clipped to [0, 1]. Not reflectance: the sensor's and the
    light's spectra stay in it, but a spectral angle does not depend on scale.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu":
        # The dtype's range, not the frame's content: every frame of a stream is divided alike (no
        # pumping), and a sensor that uses fewer bits than its dtype looks dark rather than stretched.
        divisor, basis = float(np.iinfo(raw.dtype).max), f"{raw.dtype.name} range"
    elif raw.dtype.kind == "f":
        sample = np.asarray(raw[::2, ::2], dtype=np.float64)  # a subsample is plenty for a percentile
        finite = sample[np.isfinite(sample)]
        top = float(np.percentile(finite, percentile)) if finite.size else 0.0
        divisor, basis = (top if top > 0 else 1.0), f"{percentile:g}th percentile of the frame"
    else:
        raise SourceError(f"raw counts of dtype {raw.dtype} cannot be scaled; expected integer or float")
    out = np.empty(raw.shape, dtype=np.float32)
    np.multiply(raw, np.float32(1.0 / divisor), out=out, dtype=np.float32)
    np.minimum(out, np.float32(1.0), out=out)
    np.maximum(out, np.float32(0.0), out=out)
    return ScaledCounts(cube=out, divisor=divisor, basis=basis)
