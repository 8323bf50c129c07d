"""Colorimetric projection: reflectance spectra -> linear sRGB as a human would see them under D65.

The reflectance between band centres is taken as linear (held flat beyond the first and last
band), integrated against the CIE 1931 2-degree colour matching functions weighted by the D65
illuminant, normalized so a perfect white reflector has Y = 1, and converted XYZ -> linear sRGB
(IEC 61966-2-1). Each channel is then scaled so a perfect white gives exactly (1, 1, 1): a flat
reflector of any level renders neutral grey although the tabulated D65 white sits a hair off the
sRGB one. The result is a (B, 3) matrix, so rendering a cube is one matrix product.

The CIE tables (380-780 nm, 5 nm) ship as ``samsa_stream/data/cie1931_2deg_d65_5nm.csv``; the file
header says where the numbers come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .resample import interpolation_matrix

CIE_TABLE = "cie1931_2deg_d65_5nm.csv"

# XYZ (D65 white) -> linear sRGB, IEC 61966-2-1:1999 (the inverse of its RGB -> XYZ matrix).
XYZ_TO_LINEAR_SRGB = np.array([
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
])

_STEP_NM = 1.0  # integration step; the 5 nm tables are interpolated linearly onto it


@dataclass(frozen=True)
class CieTables:
    """CIE 1931 2-degree colour matching functions and D65, on a common wavelength grid."""

    wavelengths_nm: np.ndarray  # (N,)
    cmf: np.ndarray  # (N, 3): xbar, ybar, zbar
    d65: np.ndarray  # (N,) relative spectral power


@lru_cache(maxsize=1)
def cie_tables() -> CieTables:
    """The packaged CIE tables (read once)."""
    text = resources.files("samsa_stream").joinpath("data", CIE_TABLE).read_text()
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    data = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    return CieTables(wavelengths_nm=data[:, 0], cmf=data[:, 1:4], d65=data[:, 4])


def visible_range_nm() -> tuple[float, float]:
    """Where the colour matching functions are tabulated (380-780 nm)."""
    wl = cie_tables().wavelengths_nm
    return float(wl[0]), float(wl[-1])


def xyz_weights(wavelengths_nm: np.ndarray) -> np.ndarray:
    """(B, 3) float64 matrix: reflectance spectrum at ``wavelengths_nm`` -> CIE XYZ under D65, Y(white) = 1."""
    tables = cie_tables()
    lo, hi = visible_range_nm()
    fine = np.arange(lo, hi + _STEP_NM / 2, _STEP_NM)
    cmf = np.stack([np.interp(fine, tables.wavelengths_nm, tables.cmf[:, k]) for k in range(3)], axis=1)
    d65 = np.interp(fine, tables.wavelengths_nm, tables.d65)
    weighted = cmf * d65[:, None]  # (L, 3)
    # Band b's share of the reconstructed spectrum at each fine wavelength: (B, L).
    basis = interpolation_matrix(np.asarray(wavelengths_nm, dtype=np.float64), fine, extrapolate=True)
    return basis @ weighted / weighted[:, 1].sum()


def colorimetric_weights(wavelengths_nm: np.ndarray) -> np.ndarray:
    """(B, 3) float32 projection: reflectance spectrum -> white-balanced linear sRGB (R, G, B).

    A flat reflector of reflectance r gives (r, r, r). Meant for bands covering 400-700 nm;
    bands outside 380-780 nm get no weight.
    """
    rgb = xyz_weights(wavelengths_nm) @ XYZ_TO_LINEAR_SRGB.T
    white = rgb.sum(axis=0)  # linear sRGB of a perfect white reflector, ~(1, 1, 1)
    return (rgb / white).astype(np.float32)
