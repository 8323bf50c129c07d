"""Spectral angles and the similarity maps built from them (DESIGN section 4). Pure numpy.

theta(x) = arccos(<s(x), r> / (|s(x)| |r|)), in float32 with the cosine clipped to [-1, 1].
A pixel with a zero spectrum has no spectral shape: its angle to any reference is pi/2.
"""

from __future__ import annotations

import numpy as np

HALF_PI = np.float32(np.pi / 2)
_TINY_NORM = 1e-18  # below this a float32 sum of squares is subnormal or zero, so imprecise


class SpectralError(ValueError):
    """A spectrum or click that cannot give a spectral reference; the text says why."""


def spectral_angles(cube: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Angles (radians, float32) between every pixel of ``cube`` (H, W, B) and each of ``references`` (K, B).

    Returns (H, W, K). Works for any band count B; the result has K channels regardless.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise SpectralError(f"cube must be H x W x B, got shape {cube.shape}")
    return angles_from_unit(unit_spectra(cube), references, cube.shape[:2])


def reference_spectrum(cube: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    """Mean spectrum (float32, (B,)) of the (2r+1)^2 neighbourhood of column x, row y, clipped to the image."""
    h, w = cube.shape[:2]
    col, row = int(round(x)), int(round(y))
    if not (0 <= col < w and 0 <= row < h):
        raise SpectralError(f"click ({x:g}, {y:g}) is outside the {w}x{h} image (x is the column, y the row)")
    patch = cube[max(0, row - radius): row + radius + 1, max(0, col - radius): col + radius + 1]
    spectrum = patch.reshape(-1, cube.shape[2]).astype(np.float64).mean(axis=0).astype(np.float32)
    if not np.any(spectrum) or not np.all(np.isfinite(spectrum)):
        raise SpectralError(f"the clicked spectrum at ({col}, {row}) is zero or not finite: nothing to compare against")
    return spectrum


def angle_to_similarity(theta: np.ndarray) -> np.ndarray:
    """0 rad -> 1, pi/2 rad and beyond -> 0, linear in between."""
    return np.clip(1.0 - theta / HALF_PI, 0.0, 1.0).astype(np.float32, copy=False)


def similarity_map(theta_pos: np.ndarray, theta_neg: np.ndarray | None = None) -> np.ndarray:
    """Similarity (H, W) in [0, 1] from the angles to positive (H, W, P) and negative (H, W, N) references.

    Best over positives; where a negative reference is closer than every positive one, the
    similarity is pushed down by the margin: s = s_pos - max(0, s_neg - s_pos).
    """
    s_pos = angle_to_similarity(theta_pos.min(axis=2))
    if theta_neg is None or theta_neg.shape[2] == 0:
        return s_pos
    s_neg = angle_to_similarity(theta_neg.min(axis=2))
    return np.clip(s_pos - np.maximum(0.0, s_neg - s_pos), 0.0, 1.0)


def unit_spectra(cube: np.ndarray) -> np.ndarray:
    """(H, W, B) -> (H*W, B) float32 spectra scaled to unit length; zero spectra stay zero.

    Computed once per frame and shared by every object's angle map.
    """
    b = cube.shape[-1]
    pixels = np.asarray(cube).reshape(-1, b).astype(np.float32, copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", pixels, pixels))
    precise = norms > _TINY_NORM
    pixels[precise] /= norms[precise, None]
    tiny = np.flatnonzero(~precise)
    if tiny.size:  # squares of tiny values underflow float32: normalise those few rows in float64
        rows = pixels[tiny].astype(np.float64)
        scale = np.abs(rows).max(axis=1)
        ok = scale > 0
        rows[ok] /= scale[ok, None]
        rows[ok] /= np.linalg.norm(rows[ok], axis=1)[:, None]
        pixels[tiny] = rows
    return pixels


def angles_from_unit(unit: np.ndarray, references: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Angles (H, W, K) between unit pixel spectra from ``unit_spectra`` and ``references`` (K, B)."""
    references = np.atleast_2d(np.asarray(references, dtype=np.float32))
    if references.shape[1] != unit.shape[1]:
        raise SpectralError(f"references have {references.shape[1]} bands, the cube has {unit.shape[1]}")
    ref_norm = np.linalg.norm(references, axis=1)
    if np.any(ref_norm == 0) or not np.all(np.isfinite(ref_norm)):
        raise SpectralError("a reference spectrum is zero or not finite: it has no spectral angle")
    cosine = unit @ (references / ref_norm[:, None]).T  # a zero spectrum gives 0: orthogonal to everything
    np.clip(cosine, -1.0, 1.0, out=cosine)
    return np.arccos(cosine).reshape(shape[0], shape[1], -1)
