"""Capture -> the one normalized, wavelength-tagged frame the rest of the node relies on."""

from __future__ import annotations

import numpy as np

from ..protocol import CubeFrame
from ..settings import IngestSettings
from ..spectral.pseudo_rgb import PROJECTIONS, choose_projection, render_pseudo_rgb
from .sources.base import Capture, SourceError


def check_wavelengths(wavelengths_nm: np.ndarray, bands: int, where: str) -> np.ndarray:
    """Float64 copy of the wavelength vector, or SourceError: one per band, finite, positive, strictly increasing."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    if wl.ndim != 1 or wl.size != bands:
        raise SourceError(f"{where}: {wl.size} wavelength(s) for {bands} band(s); expected one per band")
    if not np.all(np.isfinite(wl)) or np.any(wl <= 0):
        raise SourceError(f"{where}: wavelengths must be finite and positive (nm)")
    if bands > 1 and not np.all(np.diff(wl) > 0):
        at = int(np.argmin(np.diff(wl)))
        raise SourceError(f"{where}: wavelengths must be strictly increasing; band {at + 1} ({wl[at + 1]:g} nm) "
                          f"follows {wl[at]:g} nm")
    return wl


class Normalizer:
    """Validates a capture, casts it to the output dtype, replaces NaN/inf (reported in the frame's
    ``source["nonfinite_replaced"]``) and renders pseudo-RGB."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.dtype = np.dtype(settings.dtype)
        self._projection_cache: tuple[bytes, np.ndarray] | None = None

    def _projection(self, wavelengths_nm: np.ndarray) -> np.ndarray:
        key = wavelengths_nm.tobytes()
        if self._projection_cache is None or self._projection_cache[0] != key:  # recompute only on a band change
            self._projection_cache = (key, PROJECTIONS[choose_projection(wavelengths_nm)](wavelengths_nm))
        return self._projection_cache[1]

    def __call__(self, capture: Capture, stream_id: str, frame_id: int, capture_ns: int) -> CubeFrame:
        where = f"stream {stream_id} frame {frame_id}"
        if "file" in capture.metadata:
            where += f" ({capture.metadata['file']})"
        cube = np.asarray(capture.cube)
        if cube.ndim != 3 or min(cube.shape) < 1:
            raise SourceError(f"{where}: cube must be H x W x B with every side >= 1, got shape {cube.shape}")
        if cube.dtype.kind not in "fiu":
            raise SourceError(f"{where}: cube dtype {cube.dtype} is not numeric")
        if capture.calibration != "reflectance":
            raise SourceError(f"{where}: calibration state {capture.calibration!r}; raw counts must be calibrated "
                              "with white/dark references before ingest")
        wavelengths = check_wavelengths(capture.wavelengths_nm, cube.shape[2], where)
        cube32 = cube.astype(np.float32, copy=False)
        metadata = dict(capture.metadata)
        finite = np.isfinite(cube32)
        if not finite.all():  # replaced by 0 and reported, so one dead pixel never costs the frame
            metadata["nonfinite_replaced"] = int(cube32.size - np.count_nonzero(finite))
            cube32 = np.where(finite, cube32, np.float32(0.0))
        labels = capture.labels
        if labels is not None and labels.shape != cube.shape[:2]:
            raise SourceError(f"{where}: label map is {labels.shape}, the cube is {cube.shape[:2]}")
        rgb = render_pseudo_rgb(cube32, wavelengths, exposure=self.settings.rgb_exposure,
                                weights=self._projection(wavelengths))
        out = cube32 if self.dtype == np.float32 else cube32.astype(self.dtype)
        return CubeFrame(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns,
                         cube=np.ascontiguousarray(out), wavelengths_nm=wavelengths, rgb=rgb,
                         calibration="reflectance", source=metadata,
                         labels=None if labels is None else labels.astype(np.int32, copy=False))
