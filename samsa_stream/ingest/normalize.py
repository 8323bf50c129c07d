"""Capture -> the one normalized, wavelength-tagged frame the rest of the node relies on (DESIGN section 3).

Steps, in order: check the cube, wavelengths and label map; calibrate raw counts with white/dark
references (or, with ``ingest.raw_counts = "scale"`` and no references, scale them to [0, 1] and
mark the frame ``scaled_counts``); replace NaN/inf by 0 (counted); average k x k pixel blocks
(``spatial_binning``); keep the bands inside ``band_range_nm`` and resample them onto
``wavelength_grid``; render the pseudo-RGB; cast to the output dtype. The pure steps are functions
here; ``Normalizer`` chains them with the settings and caches what only changes when the bands do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..protocol import CubeFrame
from ..protocol.messages import count_nonfinite
from ..settings import IngestSettings, WavelengthGrid
from ..spectral.pseudo_rgb import PROJECTIONS, choose_projection, render_pseudo_rgb
from ..spectral.resample import interpolation_matrix
from .calibration import calibrate, load_reference, scale_counts
from .capture import CALIBRATIONS, RAW, REFLECTANCE, SCALED_COUNTS, Capture, SourceError


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


def grid_wavelengths(grid: WavelengthGrid) -> np.ndarray:
    """The grid's wavelengths: start, start + step, ... up to stop (inclusive within rounding)."""
    count = int(np.floor((grid.stop_nm - grid.start_nm) / grid.step_nm + 1e-9)) + 1
    return grid.start_nm + grid.step_nm * np.arange(count)


def replace_nonfinite(cube: np.ndarray) -> tuple[np.ndarray, int]:
    """(cube with NaN/inf set to 0, how many were replaced); the input is returned as is when all are finite."""
    bad = count_nonfinite(cube)
    if not bad:
        return cube, 0
    return np.where(np.isfinite(cube), cube, cube.dtype.type(0)), bad


def bin_pixels(cube: np.ndarray, factor: int, where: str) -> np.ndarray:
    """Average ``factor`` x ``factor`` pixel blocks of (H, W, B); rows/columns past the last whole block are dropped."""
    if factor == 1:
        return cube
    h, w, b = cube.shape
    if h < factor or w < factor:
        raise SourceError(f"{where}: a {h} x {w} image is smaller than one {factor} x {factor} binning block")
    hh, ww = h // factor, w // factor
    blocks = cube[:hh * factor, :ww * factor].reshape(hh, factor, ww, factor, b)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def bin_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """The label map at binned resolution: each block takes its centre pixel's label (labels do not average)."""
    if factor == 1:
        return labels
    h, w = labels.shape
    c = factor // 2
    return np.ascontiguousarray(labels[c:(h // factor) * factor:factor, c:(w // factor) * factor:factor])


@dataclass(frozen=True)
class BandPlan:
    """How a capture's bands become the frame's: a band selection, then an optional resampling matrix."""

    keep: np.ndarray | None  # band indices kept (band_range_nm), None = all
    matrix: np.ndarray | None  # (kept, B_out) float32 interpolation, None = no resampling
    wavelengths_nm: np.ndarray  # (B_out,)
    rgb_weights: np.ndarray  # (B_out, 3) pseudo-RGB projection

    def apply(self, cube: np.ndarray) -> np.ndarray:
        if self.keep is not None:
            cube = cube[..., self.keep]
        if self.matrix is None:
            return cube
        h, w, b = cube.shape
        return (cube.reshape(-1, b) @ self.matrix).reshape(h, w, -1)


def plan_bands(wavelengths_nm: np.ndarray, band_range_nm: tuple[float, float] | None,
               grid: WavelengthGrid | None, where: str) -> BandPlan:
    """The band selection and resampling the settings ask for, checked against these wavelengths."""
    wl = wavelengths_nm
    keep = None
    if band_range_nm is not None:
        lo, hi = band_range_nm
        inside = np.flatnonzero((wl >= lo) & (wl <= hi))
        if inside.size == 0:
            raise SourceError(f"{where}: no band inside band_range_nm {lo:g}-{hi:g} nm "
                              f"(the capture covers {wl[0]:g}-{wl[-1]:g} nm)")
        if inside.size < wl.size:
            keep, wl = inside, wl[inside]
    matrix = None
    if grid is not None:
        target = grid_wavelengths(grid)
        if target[0] < wl[0] - 1e-6 or target[-1] > wl[-1] + 1e-6:
            raise SourceError(f"{where}: wavelength_grid {target[0]:g}-{target[-1]:g} nm reaches outside the "
                              f"capture's bands {wl[0]:g}-{wl[-1]:g} nm; the node does not extrapolate")
        matrix = interpolation_matrix(wl, target).astype(np.float32)
        wl = target
    weights = PROJECTIONS[choose_projection(wl)](wl)
    return BandPlan(keep=keep, matrix=matrix, wavelengths_nm=wl, rgb_weights=weights)


class Normalizer:
    """Turns captures into frames with the ingest settings (see the module docstring for the steps).

    ``ingest.white_reference`` / ``dark_reference`` are loaded once here and serve raw captures
    that bring no references of their own. Raises SourceError for a capture that cannot be used.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.dtype = np.dtype(settings.dtype)
        self._plan_cache: tuple[bytes, BandPlan] | None = None
        self.session_white: np.ndarray | None = None
        self.session_dark: np.ndarray | None = None
        if settings.white_reference is not None and settings.dark_reference is not None:
            self.session_white = load_reference(settings.white_reference, "ingest.white_reference")
            self.session_dark = load_reference(settings.dark_reference, "ingest.dark_reference")

    def _plan(self, wavelengths_nm: np.ndarray, where: str) -> BandPlan:
        key = wavelengths_nm.tobytes()
        if self._plan_cache is None or self._plan_cache[0] != key:  # recompute only on a band change
            plan = plan_bands(wavelengths_nm, self.settings.band_range_nm, self.settings.wavelength_grid, where)
            self._plan_cache = (key, plan)
        return self._plan_cache[1]

    def _calibrate(self, capture: Capture, cube: np.ndarray, where: str, metadata: dict) -> tuple[np.ndarray, str]:
        """(float32 cube, the frame's calibration state): reflectance, or scaled counts when allowed."""
        if capture.calibration in (REFLECTANCE, SCALED_COUNTS):
            # One pass to C-ordered float32 (byte swap, interleave, cast); a no-op for float32 (H, W, B) data.
            return np.ascontiguousarray(cube, dtype=np.float32), capture.calibration
        if capture.calibration != RAW:
            raise SourceError(f"{where}: calibration state {capture.calibration!r}; expected one of "
                              f"{', '.join(CALIBRATIONS)}")
        white, dark = capture.white, capture.dark
        origin = "capture"
        if white is None or dark is None:
            white, dark, origin = self.session_white, self.session_dark, "session"
        if white is None or dark is None:
            if self.settings.raw_counts == "scale":
                scaled = scale_counts(cube)
                metadata["calibrated_with"] = f"nothing: raw counts / {scaled.divisor:g} ({scaled.basis})"
                metadata["counts_divisor"] = scaled.divisor
                return scaled.cube, SCALED_COUNTS
            raise SourceError(f"{where}: raw counts ({cube.dtype}) and no white/dark references: give the capture "
                              "its references, set ingest.white_reference and ingest.dark_reference, or set "
                              "ingest.raw_counts=scale (uncalibrated counts scaled to [0, 1])")
        result = calibrate(cube, white, dark, self.settings.white_reflectance, where)
        metadata["calibrated_with"] = f"{origin} white/dark references"
        if result.guarded:
            metadata["calibration_guarded"] = result.guarded
        return result.cube, REFLECTANCE

    def __call__(self, capture: Capture, stream_id: str, frame_id: int, capture_ns: int) -> CubeFrame:
        where = f"stream {stream_id} frame {frame_id}"
        if "file" in capture.metadata:
            where += f" ({capture.metadata['file']})"
        cube = np.asarray(capture.cube)
        if cube.ndim != 3 or min(cube.shape) < 1:
            raise SourceError(f"{where}: cube must be H x W x B with every side >= 1, got shape {cube.shape}")
        if cube.dtype.kind not in "fiu":
            raise SourceError(f"{where}: cube dtype {cube.dtype} is not numeric")
        wavelengths = check_wavelengths(capture.wavelengths_nm, cube.shape[2], where)
        labels = capture.labels
        if labels is not None and labels.shape != cube.shape[:2]:
            raise SourceError(f"{where}: label map is {labels.shape}, the cube is {cube.shape[:2]}")
        metadata = dict(capture.metadata)
        cube32, calibration = self._calibrate(capture, cube, where, metadata)
        cube32, replaced = replace_nonfinite(cube32)
        if replaced:  # replaced by 0 and reported, so one dead pixel never costs the frame
            metadata["nonfinite_replaced"] = replaced
        factor = self.settings.spatial_binning
        cube32 = bin_pixels(cube32, factor, where)
        if labels is not None:
            labels = bin_labels(np.asarray(labels), factor)
        plan = self._plan(wavelengths, where)
        cube32 = plan.apply(cube32)
        rgb = render_pseudo_rgb(cube32, plan.wavelengths_nm, exposure=self.settings.rgb_exposure,
                                gain=self.settings.rgb_gain, weights=plan.rgb_weights)
        out = cube32 if self.dtype == np.float32 else cube32.astype(self.dtype)
        return CubeFrame(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns,
                         cube=np.ascontiguousarray(out), wavelengths_nm=plan.wavelengths_nm, rgb=rgb,
                         calibration=calibration, source=metadata,
                         labels=None if labels is None else labels.astype(np.int32, copy=False))
