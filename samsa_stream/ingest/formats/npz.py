"""The node's own NumPy format (what ``samsa-stream convert`` writes):

- ``cube`` (H, W, B) or ``cubes`` (T, H, W, B);
- ``wavelengths_nm`` (B,) (``wavelengths`` is accepted too), one per band, in nm;
- optional ``labels`` (H, W) or (T, H, W), ``capture_ns`` (T,);
- optional ``calibration``: "reflectance" or "raw"; by default float cubes are reflectance and
  integer cubes raw counts;
- optional ``white`` and ``dark`` references for raw cubes: (L, W, B), (W, B) or (B,);
- ``rgb`` and ``source_json`` from ``convert`` are ignored on reading.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sources.base import Capture, SourceError
from .options import ReadOptions

CALIBRATIONS = ("reflectance", "raw")


def read_npz(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """The ``.npz`` reader: one capture per cube in the archive."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SourceError(f"{path}: holds a single array, not an .npz archive of named arrays")
    try:
        with data:
            keys = set(data.files)
            if "cubes" in keys:
                cubes = data["cubes"]
                if cubes.ndim != 4:
                    raise SourceError(f"{path}: 'cubes' must be T x H x W x B, got shape {cubes.shape}")
            elif "cube" in keys:
                cubes = data["cube"][None]
                if cubes.ndim != 4:
                    raise SourceError(f"{path}: 'cube' must be H x W x B, got shape {cubes.shape[1:]}")
            else:
                raise SourceError(f"{path}: needs an array 'cube' (H x W x B) or 'cubes' (T x H x W x B); "
                                  f"has {sorted(keys)}")
            if cubes.dtype.kind not in "fiu":
                raise SourceError(f"{path}: cube dtype {cubes.dtype} is not numeric")
            wl_key = "wavelengths_nm" if "wavelengths_nm" in keys else "wavelengths" if "wavelengths" in keys else None
            if wl_key is None:
                raise SourceError(f"{path}: needs 'wavelengths_nm' (one wavelength in nm per band)")
            wavelengths = np.asarray(data[wl_key], dtype=np.float64).ravel()
            labels = data["labels"] if "labels" in keys else None
            if labels is not None and labels.ndim == 2:
                labels = labels[None]
            if labels is not None and (labels.ndim != 3 or labels.shape[1:] != cubes.shape[1:3]):
                raise SourceError(f"{path}: 'labels' shape {labels.shape} does not fit cube(s) {cubes.shape}; "
                                  "expected H x W or T x H x W")
            times = np.asarray(data["capture_ns"], dtype=np.int64).ravel() if "capture_ns" in keys else None
            white = data["white"] if "white" in keys else None
            dark = data["dark"] if "dark" in keys else None
            if (white is None) != (dark is None):
                raise SourceError(f"{path}: has {'white' if dark is None else 'dark'} but not "
                                  f"{'dark' if dark is None else 'white'}; references come in pairs")
            default = "raw" if cubes.dtype.kind in "iu" or white is not None else "reflectance"
            calibration = str(data["calibration"]) if "calibration" in keys else default
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"{path}: a member cannot be read ({exc})") from None
    if calibration not in CALIBRATIONS:
        raise SourceError(f"{path}: 'calibration' is {calibration!r}; expected one of {', '.join(CALIBRATIONS)}")
    for t in range(cubes.shape[0]):
        yield Capture(
            cube=cubes[t], wavelengths_nm=wavelengths, calibration=calibration,
            labels=None if labels is None else labels[min(t, labels.shape[0] - 1)],
            timestamp_ns=None if times is None or t >= times.size else int(times[t]),
            metadata={"format": "npz", "file": str(path), "index": t, "stored_dtype": cubes.dtype.name},
            white=white, dark=dark,
        )
