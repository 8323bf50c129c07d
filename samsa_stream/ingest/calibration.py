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
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..threads import map_blocks
from .capture import SourceError
from .formats import read_capture
from .formats.layout import convert_rows, rows_per_block


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


@lru_cache(maxsize=8)
def _unit_bounds(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    zero, one = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    zero.flags.writeable = one.flags.writeable = False
    return zero, one


def clip_unit(rows: np.ndarray) -> None:
    """float32 (r, W, B) rows clipped to [0, 1] in place; NaN stays NaN."""
    # minimum/maximum keep NaN, as clip does, and are faster; against whole bound arrays rather than
    # scalars they run several times faster still (numpy's vector loop), with the same results.
    zero, one = _unit_bounds(rows.shape[1:])
    np.minimum(rows, one, out=rows)
    np.maximum(rows, zero, out=rows)


@dataclass(frozen=True)
class Calibration:
    """Per-column dark spectra and gains of one raw cube's references, applied to float32 rows in place."""

    dark: np.ndarray  # (W, B) or (1, B) float32
    gain: np.ndarray  # white_reflectance / (white - dark), 0 where guarded; same shape as ``dark``
    guarded: int  # guarded (column, band) elements, broadcast over the cube's columns

    def apply(self, rows: np.ndarray) -> None:
        """Raw counts already cast to float32 (r, W, B) -> reflectance clipped to [0, 1], in place."""
        np.subtract(rows, self.dark, out=rows)
        np.multiply(rows, self.gain, out=rows)
        clip_unit(rows)


def prepare_calibration(shape: tuple[int, ...], white: np.ndarray, dark: np.ndarray, white_reflectance: float = 1.0,
                        where: str = "capture") -> Calibration:
    """The calibration of a raw cube of ``shape`` (H, W, B) with references shaped as ``line_average`` accepts.

    Raises SourceError (naming ``where``) when the shapes do not fit together."""
    if len(shape) != 3:
        raise SourceError(f"{where}: raw cube must be H x W x B, got shape {shape}")
    if not 0 < white_reflectance <= 1:
        raise SourceError(f"{where}: white panel reflectance must be in (0, 1], got {white_reflectance}")
    _, w, b = shape
    white_cols = line_average(white, w, b, f"{where}: white reference")
    dark_cols = line_average(dark, w, b, f"{where}: dark reference")
    span = white_cols - dark_cols
    guarded = ~(span > 0)  # also catches NaN references
    gain = np.where(guarded, np.float32(0.0), np.float32(white_reflectance) / np.where(guarded, 1.0, span))
    # Broadcast count: a guarded (column, band) element spoils that element on every line.
    count = int(np.count_nonzero(np.broadcast_to(guarded, (w, b))))
    return Calibration(dark=dark_cols, gain=gain.astype(np.float32), guarded=count)


def calibrate(raw: np.ndarray, white: np.ndarray, dark: np.ndarray, white_reflectance: float = 1.0,
              where: str = "capture") -> Calibrated:
    """Raw counts (H, W, B) -> reflectance with references shaped as ``line_average`` accepts.

    ``white_reflectance`` is the reflectance of the white panel (1.0 for an ideal one).
    Raises SourceError (naming ``where``) when the shapes do not fit together.
    """
    raw = np.asarray(raw)
    calibration = prepare_calibration(raw.shape, white, dark, white_reflectance, where)
    h, w, b = raw.shape
    out = np.empty(raw.shape, dtype=np.float32)  # C order whatever the raw's layout; the raw may be read-only

    def work(start: int, stop: int) -> None:
        convert_rows(raw[start:stop], out[start:stop])
        calibration.apply(out[start:stop])

    map_blocks(work, h, rows_per_block(w, b))
    return Calibrated(cube=out, guarded=calibration.guarded)


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


def counts_divisor(raw: np.ndarray, percentile: float = 99.9) -> tuple[float, str]:
    """(divisor, what it is) that ``scale_counts`` divides ``raw`` by."""
    if raw.dtype.kind in "iu":
        # The dtype's range, not the frame's content: every frame of a stream is divided alike (no
        # pumping), and a sensor that uses fewer bits than its dtype looks dark rather than stretched.
        return float(np.iinfo(raw.dtype).max), f"{raw.dtype.name} range"
    if raw.dtype.kind == "f":
        sample = np.asarray(raw[::2, ::2], dtype=np.float64)  # a subsample is plenty for a percentile
        finite = sample[np.isfinite(sample)]
        top = float(np.percentile(finite, percentile)) if finite.size else 0.0
        return (top if top > 0 else 1.0), f"{percentile:g}th percentile of the frame"
    raise SourceError(f"raw counts of dtype {raw.dtype} cannot be scaled; expected integer or float")


def apply_counts_scale(rows: np.ndarray, divisor: float) -> None:
    """Raw counts already cast to float32 rows -> divided by ``divisor`` and clipped to [0, 1], in place."""
    np.multiply(rows, np.float32(1.0 / divisor), out=rows)
    clip_unit(rows)


def scale_counts(raw: np.ndarray, percentile: float = 99.9) -> ScaledCounts:
    """Raw counts -> [0, 1] float32 without references (``ingest.raw_counts = "scale"``).

    Integer counts are divided by their dtype's maximum, float counts by the frame's ``percentile``
    (they have no fixed range); the result is clipped to [0, 1]. Not reflectance: the sensor's and the
    light's spectra stay in it, but a spectral angle does not depend on scale.
    """
    raw = np.asarray(raw)
    divisor, basis = counts_divisor(raw, percentile)
    if raw.ndim != 3:
        raise SourceError(f"raw cube must be H x W x B, got shape {raw.shape}")
    h, w, b = raw.shape
    out = np.empty(raw.shape, dtype=np.float32)

    def work(start: int, stop: int) -> None:
        convert_rows(raw[start:stop], out[start:stop])
        apply_counts_scale(out[start:stop], divisor)

    map_blocks(work, h, rows_per_block(w, b))
    return ScaledCounts(cube=out, divisor=divisor, basis=basis)
