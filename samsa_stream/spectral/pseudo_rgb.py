"""Pseudo-RGB rendering of a reflectance cube: a linear (B, 3) projection, then sRGB gamma.

Projections (``PROJECTIONS``, chosen by ``choose_projection``):
- ``colorimetric`` (spectral.colorimetry): CIE 1931 colour matching under D65, white-balanced,
  used when the bands cover 400-700 nm; the image looks as the scene would to the eye.
- ``windows``: average the bands inside a red, green and blue wavelength window (the nearest
  band stands in for an empty window); for cameras that miss part of the visible range, e.g.
  TIVITA (500-1000 nm).
Both render a flat reflector as neutral grey.
Exposure: ``fixed`` maps reflectance 1.0 (times ``gain``) to white on every frame, so the
display does not flicker; ``frame`` stretches each frame's 99th percentile to white.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..threads import map_blocks
from .colorimetry import colorimetric_weights

# (lo, hi) nm per channel R, G, B. Shifted red/green windows suit cameras starting at 500 nm.
BAND_WINDOWS_NM: tuple[tuple[float, float], ...] = ((585.0, 725.0), (540.0, 585.0), (450.0, 540.0))

# 4097 entries: steps of exactly 1/4096, so round reflectances (0.5, 0.25) sit mid-cell, never on a
# cell edge where float rounding could split a grey pixel across two levels.
_LUT_SIZE = 4097
_SRGB_LUT = np.empty(_LUT_SIZE, dtype=np.uint8)


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


# Rows per block of the rendering: about 1 MiB of float32 spectra, so a block stays in cache.
_BLOCK_BYTES = 1 << 20

_SRGB_LUT[:] = np.round(_srgb_encode(np.linspace(0.0, 1.0, _LUT_SIZE)) * 255.0).astype(np.uint8)


def band_window_weights(wavelengths_nm: np.ndarray,
                        windows: tuple[tuple[float, float], ...] = BAND_WINDOWS_NM) -> np.ndarray:
    """(B, 3) weights averaging the bands inside each channel's window (rows sum to 1 per channel)."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    weights = np.zeros((wl.size, 3), dtype=np.float32)
    for channel, (lo, hi) in enumerate(windows):
        inside = (wl >= lo) & (wl <= hi)
        if not inside.any():
            inside = np.zeros(wl.size, dtype=bool)
            inside[int(np.argmin(np.abs(wl - (lo + hi) / 2)))] = True
        weights[inside, channel] = 1.0 / inside.sum()
    return weights


# Each maps a wavelength vector (B,) to a (B, 3) projection; another one registers here under its name.
PROJECTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "windows": band_window_weights,
    "colorimetric": colorimetric_weights,
}


def choose_projection(wavelengths_nm: np.ndarray) -> str:
    """``colorimetric`` when it is available and the bands cover 400-700 nm, else ``windows``."""
    wl = np.asarray(wavelengths_nm)
    if "colorimetric" in PROJECTIONS and wl.size >= 3 and wl[0] <= 400.0 and wl[-1] >= 700.0:
        return "colorimetric"
    return "windows"


def exposure_scale(linear: np.ndarray, exposure: str = "fixed", gain: float = 1.0) -> float:
    """The factor mapping linear RGB onto the LUT's [0, 1]: ``gain`` (``fixed``), 1 / 99th percentile (``frame``)."""
    if exposure == "frame":
        top = float(np.percentile(linear, 99.0)) if linear.size else 0.0
        return 1.0 / top if top > 0 else 1.0
    if exposure == "fixed":
        return float(gain)
    raise ValueError(f"exposure must be 'fixed' or 'frame', got {exposure!r}")


def weighted_bands(weights: np.ndarray) -> slice:
    """The smallest band range holding every band that some channel weighs (e.g. none past 780 nm for
    ``colorimetric``): the projection skips the others, with the same sums and up to half the work."""
    used = np.flatnonzero(np.asarray(weights).any(axis=1))
    return slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)


def project(pixels: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None,
            bands: slice | None = None) -> np.ndarray:
    """Linear RGB (n, 3) float32 of (n, B) spectra: ``pixels @ weights``, into ``out`` when given.

    ``bands``: ``weighted_bands(weights)``, passed by callers that project many blocks."""
    bands = weighted_bands(weights) if bands is None else bands
    if out is None:
        out = np.empty((pixels.shape[0], weights.shape[1]), dtype=np.result_type(np.float32, weights))
    if bands.stop == bands.start:
        out[...] = 0
        return out
    np.matmul(pixels[:, bands].astype(np.float32, copy=False), weights[bands], out=out)
    return out


def encode_srgb(linear: np.ndarray, scale: float, out: np.ndarray) -> None:
    """uint8 sRGB of linear RGB times ``scale`` (1.0 -> 255), through the LUT, into ``out`` (same shape)."""
    # +0.5 rounds to the nearest LUT entry (truncation would darken every pixel by up to one step).
    index = linear * (scale * (_LUT_SIZE - 1))
    np.add(index, 0.5, out=index)
    np.clip(index, 0, _LUT_SIZE - 1, out=index)
    np.take(_SRGB_LUT, index.astype(np.int32), out=out)


def render_pseudo_rgb(cube: np.ndarray, wavelengths_nm: np.ndarray, exposure: str = "fixed", gain: float = 1.0,
                      projection: str | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Reflectance cube (H, W, B) -> uint8 (H, W, 3) sRGB image. Pass ``weights`` to reuse a projection.

    Rows are rendered in blocks on the process's block pool (``threads.map_blocks``)."""
    h, w, b = cube.shape
    if exposure not in ("fixed", "frame"):
        raise ValueError(f"exposure must be 'fixed' or 'frame', got {exposure!r}")
    if weights is None:
        weights = PROJECTIONS[projection or choose_projection(wavelengths_nm)](wavelengths_nm)
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, _BLOCK_BYTES // max(1, w * b * 4))
    bands = weighted_bands(weights)
    if exposure == "fixed":
        scale = exposure_scale(np.empty(0), exposure, gain)

        def fixed(start: int, stop: int) -> None:
            linear = project(cube[start:stop].reshape(-1, b), weights, bands=bands)
            encode_srgb(linear, scale, rgb[start:stop].reshape(-1, 3))

        map_blocks(fixed, h, rows)
        return rgb
    linear = np.empty((h * w, 3), dtype=np.result_type(np.float32, weights))

    def frame(start: int, stop: int) -> None:
        project(cube[start:stop].reshape(-1, b), weights, linear[start * w:stop * w], bands)

    map_blocks(frame, h, rows)
    scale = exposure_scale(linear, exposure, gain)
    map_blocks(lambda start, stop: encode_srgb(linear[start * w:stop * w], scale, rgb[start:stop].reshape(-1, 3)),
               h, rows)
    return rgb
