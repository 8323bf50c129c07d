"""The node's own NumPy format: ``cube`` (H, W, B) or ``cubes`` (T, H, W, B), ``wavelengths_nm`` (B,),
optional ``labels`` (H, W) / (T, H, W) and ``capture_ns`` (T,), optional ``calibration`` string."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..sources.base import Capture, SourceError


def read_npz(path: Path) -> Iterator[Capture]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: not a readable .npz file ({exc})") from None
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
            raise SourceError(f"{path}: needs an array 'cube' (H x W x B) or 'cubes' (T x H x W x B); has {sorted(keys)}")
        wl_key = "wavelengths_nm" if "wavelengths_nm" in keys else "wavelengths" if "wavelengths" in keys else None
        if wl_key is None:
            raise SourceError(f"{path}: needs 'wavelengths_nm' (one wavelength in nm per band)")
        wavelengths = np.asarray(data[wl_key], dtype=np.float64)
        labels = data["labels"] if "labels" in keys else None
        if labels is not None and labels.ndim == 2:
            labels = labels[None]
        times = np.asarray(data["capture_ns"], dtype=np.int64) if "capture_ns" in keys else None
        calibration = str(data["calibration"]) if "calibration" in keys else "reflectance"
    for t in range(cubes.shape[0]):
        yield Capture(
            cube=cubes[t], wavelengths_nm=wavelengths, calibration=calibration,
            labels=None if labels is None else labels[min(t, labels.shape[0] - 1)],
            timestamp_ns=None if times is None or t >= times.size else int(times[t]),
            metadata={"file": str(path), "index": t},
        )
