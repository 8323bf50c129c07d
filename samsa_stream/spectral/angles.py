"""Spectral angles and the similarity maps built from them (DESIGN section 4). Pure numpy.

theta(x) = arccos(<s(x), r> / (|s(x)| |r|)), in float32 with the cosine clipped to [-1, 1].
A pixel with a zero spectrum has no spectral shape: its angle to any reference is pi/2.
"""

from __future__ import annotations

import numpy as np

from .. import threads
from ..errors import SamsaError

HALF_PI = np.float32(np.pi / 2)
_TINY_NORM = 1e-18  # below this a float32 sum of squares is subnormal or zero, so imprecise


class SpectralError(SamsaError, ValueError):
    """A spectrum or click that cannot give a spectral reference; the text says why."""


def spectral_angles(cube: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Angles (radians, float32) between every pixel of ``cube`` (H, W, B) and each of ``references`` (K, B).

    Returns (H, W, K). Works for any band count B; the result has K channels regardless.
    """
    return PixelSpectra.of(cube).angles(references)


# A click's reference averages only the clicked pixel's own material: neighbours within this multiple of
# the angle to its most similar neighbour, and never beyond the cap (a target smaller than the window
# is not blended with its surroundings), nor below the floor (noise-free data has zero-angle neighbours).
REFERENCE_SPREAD = 2.0
REFERENCE_MAX_RAD = 0.08
REFERENCE_MIN_RAD = 0.01


def reference_spectrum(cube: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    """Reference spectrum (float32, (B,)) of a click at column x, row y.

    The mean of the clicked pixel and the pixels of its (2r+1)^2 neighbourhood (clipped to the
    image) that are its own material: within min(REFERENCE_MAX_RAD, REFERENCE_SPREAD x the angle to
    its most similar 8-neighbour) of the clicked spectrum. So a click on a 3-pixel target gets that
    target's spectrum, and a click inside a large region the mean of its noisy neighbourhood.
    """
    h, w = cube.shape[:2]
    col, row = int(round(x)), int(round(y))
    if not (0 <= col < w and 0 <= row < h):
        raise SpectralError(f"click ({x:g}, {y:g}) is outside the {w}x{h} image (x is the column, y the row)")
    top, left = max(0, row - radius), max(0, col - radius)
    patch = cube[top: row + radius + 1, left: col + radius + 1].astype(np.float64)
    pixels = patch.reshape(-1, cube.shape[2])
    centre = patch[row - top, col - left]
    centre_norm = float(np.linalg.norm(centre))
    if radius > 0 and centre_norm > 0 and np.isfinite(centre_norm):
        norms = np.linalg.norm(pixels, axis=1)
        cosine = np.divide(pixels @ centre, norms * centre_norm, out=np.zeros(len(pixels)), where=norms > 0)
        theta = np.arccos(np.clip(cosine, -1.0, 1.0))
        dr, dc = np.divmod(np.arange(len(pixels)), patch.shape[1])
        dr, dc = dr - (row - top), dc - (col - left)
        near = (np.abs(dr) <= 1) & (np.abs(dc) <= 1) & ((dr != 0) | (dc != 0)) & (norms > 0)
        closest = float(theta[near].min()) if near.any() else 0.0
        within = min(REFERENCE_MAX_RAD, max(REFERENCE_MIN_RAD, REFERENCE_SPREAD * closest))
        pixels = pixels[(theta <= within) & (norms > 0)]
    spectrum = pixels.mean(axis=0).astype(np.float32)
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


# Pixel pairs sampled for the noise estimate (rows x pairs per row): enough for a stable median, and a
# few milliseconds on a 480 x 640 x 100 frame.
_NOISE_ROWS = 48
_NOISE_PAIRS = 96


def sensor_noise(cube: np.ndarray) -> float:
    """Per-band noise of ``cube`` (H, W, B) in its own units, from horizontally adjacent pixels: each
    pair brought to the same brightness (angles ignore brightness, so shading is no noise), then the
    robust spread (1.4826 x median absolute value) of their differences, divided by sqrt(2). Edges
    between materials are a minority of pixel pairs, so the median sees the noise."""
    h, w = cube.shape[:2]
    if w < 2:
        return 0.0
    rows = cube[:: max(1, h // _NOISE_ROWS)]
    cols = np.arange(0, w - 1, max(1, (w - 1) // _NOISE_PAIRS))
    left = np.asarray(rows[:, cols], dtype=np.float32)
    right = np.asarray(rows[:, cols + 1], dtype=np.float32)
    norm_left = np.linalg.norm(left, axis=2, keepdims=True)
    norm_right = np.linalg.norm(right, axis=2, keepdims=True)
    scale = np.divide(norm_left, norm_right, out=np.ones_like(norm_left), where=norm_right > 0)
    value = float(np.median(np.abs(right * scale - left))) * 1.4826 / np.sqrt(2.0)
    return value if np.isfinite(value) else 0.0


# Pixels per block: a block's spectra (3 MB at 100 bands) stay in cache from their norms through the
# product to the arccos, so each map is one pass over the cube in memory; blocks spread over the threads.
_BLOCK = 8192


class PixelSpectra:
    """A frame's pixel spectra and their norms, shared by every reference of every object.

    No normalised copy of the cube is made: the inverse norms are computed with the first angle map,
    in the same pass over the cube, and kept, so every map is one pass (a product scaled by them).
    A float16 cube is converted block by block as it is read."""

    def __init__(self, pixels: np.ndarray, shape: tuple[int, int]) -> None:
        self.pixels = pixels  # (H*W, B) float32 or float16; a view of the cube when it is contiguous
        self.shape = shape
        self.inv_norm: np.ndarray | None = None  # (H*W,) 1/|s(x)|, 0 for zero and tiny spectra
        self.tiny = np.empty(0, dtype=np.intp)  # non-zero rows whose float32 squares underflow: float64 cosines

    @classmethod
    def of(cls, cube: np.ndarray) -> PixelSpectra:
        cube = np.asarray(cube)
        if cube.ndim != 3:
            raise SpectralError(f"cube must be H x W x B, got shape {cube.shape}")
        h, w, b = cube.shape
        keep = cube.dtype if cube.dtype in (np.float16, np.float32) else np.float32
        return cls(np.ascontiguousarray(cube.reshape(-1, b), dtype=keep), (h, w))

    @property
    def bands(self) -> int:
        return int(self.pixels.shape[1])

    def inverse_norms(self) -> np.ndarray:
        """(H*W,) 1/|s(x)| (0 for zero and tiny spectra): kept from the first angle map, or computed now."""
        if self.inv_norm is None:
            inv_norm = np.empty(self.pixels.shape[0], dtype=np.float32)
            threads.map_blocks(lambda start, stop: _inverse_norms(self.pixels[start:stop], inv_norm[start:stop]),
                               self.pixels.shape[0], _BLOCK)
            self._keep_norms(inv_norm)
            return inv_norm
        return self.inv_norm

    def _keep_norms(self, inv_norm: np.ndarray) -> None:
        self.inv_norm = inv_norm
        unscaled = np.flatnonzero(inv_norm == 0)
        if unscaled.size:
            self.tiny = unscaled[np.any(self.pixels[unscaled] != 0, axis=1)]

    def angles(self, references: np.ndarray) -> np.ndarray:
        """Angles (H, W, K) float32 to each of ``references`` (K, B)."""
        directions = _unit_references(references, self.bands)  # (B, K)
        n = self.pixels.shape[0]
        theta = np.empty((n, directions.shape[1]), dtype=np.float32)
        first = self.inv_norm is None
        inv_norm = np.empty(n, dtype=np.float32) if self.inv_norm is None else self.inv_norm

        def block(start: int, stop: int) -> None:
            pixels = self.pixels[start:stop].astype(np.float32, copy=False)
            inv = inv_norm[start:stop]
            if first:
                _inverse_norms(pixels, inv)
            cosine = pixels @ directions
            cosine *= inv[:, None]  # a zero spectrum has 0 here: a right angle to everything
            np.clip(cosine, -1.0, 1.0, out=cosine)
            np.arccos(cosine, out=theta[start:stop])

        threads.map_blocks(block, n, _BLOCK)
        if first:
            self._keep_norms(inv_norm)
        if self.tiny.size:  # squares of tiny values underflow float32: those few rows get their cosines in float64
            rows = self.pixels[self.tiny].astype(np.float64)
            rows /= np.abs(rows).max(axis=1, keepdims=True)
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            theta[self.tiny] = np.arccos(np.clip(rows @ directions.astype(np.float64), -1.0, 1.0))
        return theta.reshape(self.shape[0], self.shape[1], -1)


def _inverse_norms(pixels: np.ndarray, out: np.ndarray) -> None:
    """1/|s| of each row of ``pixels`` into ``out``; 0 where the float32 norm is too small to be precise."""
    block = pixels.astype(np.float32, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    out[:] = 0.0
    np.divide(1.0, norms, out=out, where=norms > _TINY_NORM)


def _unit_references(references: np.ndarray, bands: int) -> np.ndarray:
    """(K, B) references -> (B, K) float32 unit directions; SpectralError for a wrong band count or zero."""
    refs = np.atleast_2d(np.asarray(references, dtype=np.float32))
    if refs.shape[1] != bands:
        raise SpectralError(f"references have {refs.shape[1]} bands, the cube has {bands}")
    ref_norm = np.linalg.norm(refs, axis=1)
    if np.any(ref_norm == 0) or not np.all(np.isfinite(ref_norm)):
        raise SpectralError("a reference spectrum is zero or not finite: it has no spectral angle")
    return np.ascontiguousarray((refs / ref_norm[:, None]).T)
