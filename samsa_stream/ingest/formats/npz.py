"""The node's own NumPy format (what ``samsa-stream convert`` writes):

- ``cube`` (H, W, B) or ``cubes`` (T, H, W, B);
- ``wavelengths_nm`` (B,) (``wavelengths`` is accepted too), one per band, in nm;
- optional ``labels`` (H, W) or (T, H, W), ``capture_ns`` (T,);
- optional ``calibration``: "reflectance", "raw" or "scaled_counts" (raw counts scaled to [0, 1]
  without references, see ``ingest.raw_counts``); by default float cubes are reflectance and
  integer cubes raw counts;
- optional ``white`` and ``dark`` references for raw cubes: (L, W, B), (W, B) or (B,);
- ``rgb`` and ``source_json`` from ``convert`` are ignored on reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..capture import CALIBRATIONS, Capture, SourceError
from .npy import NUMPY_READ_ERRORS
from .options import ReadOptions

MEMBERS = ("cubes", "cube", "wavelengths_nm", "wavelengths", "labels", "capture_ns", "white", "dark", "calibration")
PREFERRED = {"cube": "cubes", "wavelengths": "wavelengths_nm"}  # the second name is read only without the first


def _members(path: Path) -> dict[str, np.ndarray]:
    """The archive's members the reader uses, read whole (an archive member cannot be memory-mapped)."""
    try:
        data = np.load(path, allow_pickle=False)
    except NUMPY_READ_ERRORS as exc:
        raise SourceError(f"{path}: not a readable .npz file ({exc or type(exc).__name__})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SourceError(f"{path}: holds a single array, not an .npz archive of named arrays")
    with data:
        members: dict[str, np.ndarray] = {}
        for key in MEMBERS:
            if key in data.files and PREFERRED.get(key) not in data.files:
                try:
                    members[key] = data[key]
                except NUMPY_READ_ERRORS as exc:
                    raise SourceError(f"{path}: member {key!r} cannot be read ({exc or type(exc).__name__})") from exc
        if "cube" not in members and "cubes" not in members:
            raise SourceError(f"{path}: needs an array 'cube' (H x W x B) or 'cubes' (T x H x W x B); "
                              f"has {sorted(data.files)}")
    return members


def read_npz(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """The ``.npz`` reader: one capture per cube in the archive."""
    data = _members(path)
    if "cubes" in data:
        cubes = data["cubes"]
        if cubes.ndim != 4:
            raise SourceError(f"{path}: 'cubes' must be T x H x W x B, got shape {cubes.shape}")
    else:
        cubes = data["cube"][None]
        if cubes.ndim != 4:
            raise SourceError(f"{path}: 'cube' must be H x W x B, got shape {cubes.shape[1:]}")
    if cubes.dtype.kind not in "fiu":
        raise SourceError(f"{path}: cube dtype {cubes.dtype} is not numeric")
    wl_key = "wavelengths_nm" if "wavelengths_nm" in data else "wavelengths" if "wavelengths" in data else None
    if wl_key is None:
        raise SourceError(f"{path}: needs 'wavelengths_nm' (one wavelength in nm per band)")
    wavelengths = np.asarray(data[wl_key], dtype=np.float64).ravel()
    labels = data.get("labels")
    if labels is not None and labels.ndim == 2:
        labels = labels[None]
    if labels is not None and (labels.ndim != 3 or labels.shape[1:] != cubes.shape[1:3]):
        raise SourceError(f"{path}: 'labels' shape {labels.shape} does not fit cube(s) {cubes.shape}; "
                          "expected H x W or T x H x W")
    times = np.asarray(data["capture_ns"], dtype=np.int64).ravel() if "capture_ns" in data else None
    white, dark = data.get("white"), data.get("dark")
    if (white is None) != (dark is None):
        raise SourceError(f"{path}: has {'white' if dark is None else 'dark'} but not "
                          f"{'dark' if dark is None else 'white'}; references come in pairs")
    default = "raw" if cubes.dtype.kind in "iu" or white is not None else "reflectance"
    calibration = str(data["calibration"]) if "calibration" in data else default
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
