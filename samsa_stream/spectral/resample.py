"""Spectral resampling as a matrix: spectra sampled at some wavelengths -> the same spectra at others.

Linear interpolation between band centres is linear in the spectrum, so it is one (B_in, B_out)
matrix; a whole cube is resampled with a single matrix product and the matrix is reused while the
wavelengths stay the same.
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(source_nm: np.ndarray, target_nm: np.ndarray, extrapolate: bool = False) -> np.ndarray:
    """(B_in, B_out) float64 matrix M so that ``spectra @ M`` interpolates spectra linearly from
    ``source_nm`` (strictly increasing) to ``target_nm``.

    Outside the source range the nearest band's value is held when ``extrapolate`` is true;
    otherwise a target outside the range raises ValueError naming it.
    """
    src = np.asarray(source_nm, dtype=np.float64)
    dst = np.asarray(target_nm, dtype=np.float64)
    if src.ndim != 1 or dst.ndim != 1 or src.size == 0:
        raise ValueError("wavelength vectors must be 1-D and the source non-empty")
    if src.size > 1 and not np.all(np.diff(src) > 0):
        raise ValueError("source wavelengths must be strictly increasing")
    if not extrapolate and dst.size and (dst.min() < src[0] - 1e-9 or dst.max() > src[-1] + 1e-9):
        raise ValueError(f"target wavelengths {dst.min():g}-{dst.max():g} nm reach outside the source range "
                         f"{src[0]:g}-{src[-1]:g} nm")
    matrix = np.zeros((src.size, dst.size), dtype=np.float64)
    if src.size == 1:
        matrix[0, :] = 1.0
        return matrix
    x = np.clip(dst, src[0], src[-1])
    upper = np.clip(np.searchsorted(src, x, side="right"), 1, src.size - 1)
    lower = upper - 1
    t = (x - src[lower]) / (src[upper] - src[lower])
    columns = np.arange(dst.size)
    np.add.at(matrix, (lower, columns), 1.0 - t)
    np.add.at(matrix, (upper, columns), t)
    return matrix

