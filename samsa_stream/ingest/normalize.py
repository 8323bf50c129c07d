"""Capture -> the one normalized, wavelength-tagged frame the rest of the node relies on (DESIGN section 3).

Steps, in order: check the cube, wavelengths and label map; calibrate raw counts with white/dark
references (or, with ``ingest.raw_counts = "scale"`` and no references, scale them to [0, 1] and
mark the frame ``scaled_counts``); replace NaN/inf by 0 (counted); average k x k pixel blocks
(``spatial_binning``); keep the bands inside ``band_range_nm`` and resample them onto
``wavelength_grid``; render the pseudo-RGB; cast to the output dtype. The pure steps are functions
here; ``Normalizer`` chains them with the settings and caches what only changes when the bands do.

Speed: the steps run per block of rows on the block pool (``threads.map_blocks``), each block read from
the stored layout (``formats.layout``) and carried from cast to pseudo-RGB while it is in cache. When
the frame keeps the capture's pixels and bands (no binning, band range or grid) that is the only pass
over the cube; the frame's cube is written into a recycled array (``CubeBuffers``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..protocol import CubeFrame
from ..protocol.messages import count_nonfinite
from ..settings import IngestSettings, WavelengthGrid
from ..spectral.pseudo_rgb import (
    PROJECTIONS,
    choose_projection,
    encode_srgb,
    exposure_scale,
    project,
    render_pseudo_rgb,
    weighted_bands,
)
from ..spectral.resample import interpolation_matrix
from ..threads import map_blocks
from .calibration import apply_counts_scale, counts_divisor, load_reference, prepare_calibration
from .capture import CALIBRATIONS, RAW, REFLECTANCE, SCALED_COUNTS, Capture, SourceError
from .formats.layout import CubeBuffers, convert_rows, rows_per_block


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


def count_nonfinite_rows(rows: np.ndarray) -> int:
    """How many NaN/inf values the float (r, W, B) ``rows`` hold (as ``protocol.messages.count_nonfinite``)."""
    # One matrix-vector product of the spectra with ones is NaN/inf wherever a value is (and runs several
    # times faster than a reduction); only then (or if a finite sum overflowed) is every value checked.
    with np.errstate(over="ignore", invalid="ignore"):
        sums = rows.reshape(-1, rows.shape[-1]) @ np.ones(rows.shape[-1], dtype=rows.dtype)
    if np.isfinite(sums).all():
        return 0
    return int(rows.size - np.count_nonzero(np.isfinite(rows)))


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
        self._buffers = CubeBuffers()  # frame cubes are written into recycled arrays (no page faults per frame)
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

    def _rows_step(self, capture: Capture, cube: np.ndarray, where: str,
                   metadata: dict) -> tuple[Callable[[np.ndarray], None] | None, str]:
        """(what turns float32-cast rows into the frame's values in place, the frame's calibration state)."""
        if capture.calibration in (REFLECTANCE, SCALED_COUNTS):
            return None, capture.calibration
        if capture.calibration != RAW:
            raise SourceError(f"{where}: calibration state {capture.calibration!r}; expected one of "
                              f"{', '.join(CALIBRATIONS)}")
        white, dark = capture.white, capture.dark
        origin = "capture"
        if white is None or dark is None:
            white, dark, origin = self.session_white, self.session_dark, "session"
        if white is None or dark is None:
            if self.settings.raw_counts == "scale":
                divisor, basis = counts_divisor(cube)
                metadata["calibrated_with"] = f"nothing: raw counts / {divisor:g} ({basis})"
                metadata["counts_divisor"] = divisor
                return partial(apply_counts_scale, divisor=divisor), SCALED_COUNTS
            raise SourceError(f"{where}: raw counts ({cube.dtype}) and no white/dark references: give the capture "
                              "its references, set ingest.white_reference and ingest.dark_reference, or set "
                              "ingest.raw_counts=scale (uncalibrated counts scaled to [0, 1])")
        calibration = prepare_calibration(cube.shape, white, dark, self.settings.white_reflectance, where)
        metadata["calibrated_with"] = f"{origin} white/dark references"
        if calibration.guarded:
            metadata["calibration_guarded"] = calibration.guarded
        return calibration.apply, REFLECTANCE

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
        step, calibration = self._rows_step(capture, cube, where, metadata)
        plan = self._plan(wavelengths, where)
        factor = self.settings.spatial_binning
        exposure = self.settings.rgb_exposure
        h, w, b = cube.shape
        # The frame's bands and pixels are the capture's: one pass renders the pseudo-RGB and writes the
        # frame's cube while each block is in cache. Otherwise a float32 cube is made first.
        direct = factor == 1 and plan.keep is None and plan.matrix is None
        # A C-ordered float32 reflectance cube is the frame's cube as it is (no copy), as before.
        reuse = step is None and cube.dtype == np.float32 and cube.flags.c_contiguous
        cube32 = cube if reuse else self._buffers.take(cube.shape, np.float32)
        final = cube32 if not direct or self.dtype == np.float32 else self._buffers.take(cube.shape, self.dtype)
        rgb = np.empty((h, w, 3), dtype=np.uint8) if direct else None
        linear = np.empty((h * w, 3), dtype=np.float32) if direct and exposure == "frame" else None
        bands = weighted_bands(plan.rgb_weights)
        scale = self.settings.rgb_gain if exposure == "fixed" else 1.0
        counts: list[int] = []

        def work(start: int, stop: int) -> None:
            rows = cube32[start:stop]
            if not reuse:
                convert_rows(cube[start:stop], rows)
                if step is not None:
                    step(rows)
            bad = count_nonfinite_rows(rows)
            if bad:
                counts.append(bad)
                if reuse:
                    return  # the capture's own array is not written; the frame is rendered again below
                np.copyto(rows, 0.0, where=~np.isfinite(rows))
            if rgb is None:
                return
            pixels = rows.reshape(-1, b)
            if linear is None:
                encode_srgb(project(pixels, plan.rgb_weights, bands=bands), scale, rgb[start:stop].reshape(-1, 3))
            else:
                project(pixels, plan.rgb_weights, linear[start * w:stop * w], bands)
            if final is not cube32:
                np.copyto(final[start:stop], rows, casting="same_kind")

        map_blocks(work, h, rows_per_block(w, b))
        replaced = sum(counts)
        if replaced:  # replaced by 0 and reported, so one dead pixel never costs the frame
            metadata["nonfinite_replaced"] = replaced
            if reuse:  # the capture's own array is left as it is: render from a cleaned copy
                cube32, rgb = replace_nonfinite(cube32)[0], None
        if rgb is not None:
            if linear is not None:
                image, frame_scale, values = rgb, exposure_scale(linear, exposure), linear
                map_blocks(lambda start, stop: encode_srgb(values[start * w:stop * w], frame_scale,
                                                           image[start:stop].reshape(-1, 3)),
                           h, rows_per_block(w, b))
            out = final
        else:
            binned = bin_pixels(cube32, factor, where)
            if labels is not None:
                labels = bin_labels(np.asarray(labels), factor)
            resampled = plan.apply(binned)
            rgb = render_pseudo_rgb(resampled, plan.wavelengths_nm, exposure=exposure,
                                    gain=self.settings.rgb_gain, weights=plan.rgb_weights)
            out = resampled if self.dtype == np.float32 else resampled.astype(self.dtype)
        return CubeFrame(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns,
                         cube=np.ascontiguousarray(out), wavelengths_nm=plan.wavelengths_nm, rgb=rgb,
                         calibration=calibration, source=metadata,
                         labels=None if labels is None else labels.astype(np.int32, copy=False))
