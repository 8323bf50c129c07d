"""What a source delivers before normalization, and the error for a capture that cannot be used.

A leaf module: readers (``formats``), sources and the normalizer all build on it.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SamsaError

# Calibration states. A capture is "reflectance" (ready), "raw" (sensor counts; calibrated with
# white/dark references) or "scaled_counts" (raw counts scaled to [0, 1] without references, as
# ``ingest.raw_counts = "scale"`` makes them; a normalized frame keeps this mark).
REFLECTANCE = "reflectance"
RAW = "raw"
SCALED_COUNTS = "scaled_counts"
CALIBRATIONS = (REFLECTANCE, RAW, SCALED_COUNTS)


class SourceError(SamsaError, ValueError):
    """A capture that cannot be read or used; the text names the file or frame and what was expected."""


# What reading a damaged, truncated or vanished file raises (from numpy, zipfile, the OS): readers turn
# these into a SourceError naming the file. Anything else is a programming error and keeps its traceback.
READ_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, ValueError, struct.error, zipfile.BadZipFile, zlib.error, MemoryError)


@dataclass
class Capture:
    """One frame as a source delivers it, before normalization (any dtype, any band count)."""

    cube: np.ndarray  # (H, W, B)
    wavelengths_nm: np.ndarray  # (B,)
    calibration: str = REFLECTANCE  # one of CALIBRATIONS
    labels: np.ndarray | None = None  # optional (H, W) label map
    timestamp_ns: int | None = None  # when it was captured, for recorded-pace replay
    metadata: dict[str, Any] = field(default_factory=dict)
    # Raw captures: white and dark reference images (L, W, B), (W, B) or (B,), same bands as the cube.
    white: np.ndarray | None = None
    dark: np.ndarray | None = None


__all__ = ["CALIBRATIONS", "READ_ERRORS", "RAW", "REFLECTANCE", "SCALED_COUNTS", "Capture", "SourceError"]
