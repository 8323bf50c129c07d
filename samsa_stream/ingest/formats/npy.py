"""Plain NumPy ``.npy`` cubes: (H, W, B) or a sequence (T, H, W, B), memory-mapped.

A ``.npy`` holds one array, so the rest lies next to it:
- wavelengths (nm, one per band): ``<stem>_wavelengths_nm.npy`` / ``.txt``, else a
  ``wavelengths_nm.npy`` / ``.txt`` shared by every cube in the folder (an image sequence);
- an optional label map (H, W) or (T, H, W): ``<stem>_labels.npy``.
Float data is reflectance; integer data is raw counts (white/dark references come from
``ingest.white_reference`` / ``dark_reference``).
"""

from __future__ import annotations

import tokenize
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..capture import READ_ERRORS, Capture, SourceError
from .options import ReadOptions

# np.load on a damaged file raises these besides READ_ERRORS: numpy's header parser a TokenError,
# zipfile (.npz) NotImplementedError for an unknown compression method and RuntimeError for a member
# that looks encrypted. Only calls into np.load and archive members are guarded with them.
NUMPY_READ_ERRORS: tuple[type[Exception], ...] = (*READ_ERRORS, tokenize.TokenError, NotImplementedError,
                                                  RuntimeError)

WAVELENGTHS_SUFFIX = "_wavelengths_nm"
LABELS_SUFFIX = "_labels"
SHARED_WAVELENGTHS = ("wavelengths_nm.npy", "wavelengths_nm.txt")


def is_sidecar(path: Path) -> bool:
    """True for the wavelength and label files that accompany a cube (not captures themselves)."""
    stem = path.stem
    return path.name in SHARED_WAVELENGTHS or stem.endswith((WAVELENGTHS_SUFFIX, LABELS_SUFFIX))


def _load_vector(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".txt":
            return np.loadtxt(path, dtype=np.float64, ndmin=1, delimiter=None)
        return np.load(path, allow_pickle=False)
    except NUMPY_READ_ERRORS as exc:
        raise SourceError(f"{path}: not a readable wavelength list ({exc or type(exc).__name__})") from exc


def wavelength_file(path: Path) -> Path:
    """The wavelength file that belongs to cube ``path``, or SourceError listing where it looked."""
    candidates = [path.with_name(path.stem + WAVELENGTHS_SUFFIX + ext) for ext in (".npy", ".txt")]
    candidates += [path.with_name(name) for name in SHARED_WAVELENGTHS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SourceError(f"{path}: no wavelengths next to it (looked for {', '.join(c.name for c in candidates)}; "
                      "one value in nm per band)")


def _load_array(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NUMPY_READ_ERRORS as exc:
        raise SourceError(f"{path}: not a readable .npy {what} ({exc or type(exc).__name__})") from exc


def read_npy(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """The ``.npy`` reader: one capture per cube in the file."""
    cubes = _load_array(path, "cube")
    if cubes.ndim == 3:
        cubes = cubes[None]
    if cubes.ndim != 4:
        raise SourceError(f"{path}: a cube must be H x W x B (or T x H x W x B for a sequence), "
                          f"got shape {cubes.shape}")
    if cubes.dtype.kind not in "fiu":
        raise SourceError(f"{path}: dtype {cubes.dtype} is not numeric")
    wl_path = wavelength_file(path)
    wavelengths = np.asarray(_load_vector(wl_path), dtype=np.float64).ravel()
    labels_path = path.with_name(path.stem + LABELS_SUFFIX + ".npy")
    labels = _load_array(labels_path, "label map") if labels_path.is_file() else None
    if labels is not None:
        labels = labels[None] if labels.ndim == 2 else labels
        if labels.ndim != 3 or labels.shape[1:] != cubes.shape[1:3] or labels.shape[0] not in (1, cubes.shape[0]):
            raise SourceError(f"{labels_path}: label map shape {labels.shape} does not fit cube(s) {cubes.shape}; "
                              "expected H x W or T x H x W")
    calibration = "reflectance" if cubes.dtype.kind == "f" else "raw"
    for t in range(cubes.shape[0]):
        yield Capture(cube=cubes[t], wavelengths_nm=wavelengths, calibration=calibration,
                      labels=None if labels is None else np.asarray(labels[min(t, labels.shape[0] - 1)]),
                      metadata={"format": "npy", "file": str(path), "index": t, "wavelengths_file": str(wl_path),
                                "stored_dtype": cubes.dtype.name})
