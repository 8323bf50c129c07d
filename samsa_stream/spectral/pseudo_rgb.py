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


def render_pseudo_rgb(cube: np.ndarray, wavelengths_nm: np.ndarray, exposure: str = "fixed", gain: float = 1.0,
                      projection: str | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Reflectance cube (H, W, B) -> uint8 (H, W, 3) sRGB image. Pass ``weights`` to reuse a projection."""
    h, w, b = cube.shape
    if weights is None:
        weights = PROJECTIONS[projection or choose_projection(wavelengths_nm)](wavelengths_nm)
    linear = cube.reshape(-1, b).astype(np.float32, copy=False) @ weights
    if exposure == "frame":
        top = float(np.percentile(linear, 99.0)) if linear.size else 0.0
        scale = 1.0 / top if top > 0 else 1.0
    elif exposure == "fixed":
        scale = float(gain)
    else:
        raise ValueError(f"exposure must be 'fixed' or 'frame', got {exposure!r}")
    # +0.5 rounds to the nearest LUT entry (truncation would darken every pixel by up to one step).
    index = np.clip(linear * (scale * (_LUT_SIZE - 1)) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
    return _SRGB_LUT[index].reshape(h, w, 3)
