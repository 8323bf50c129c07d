"""TIVITA hyperspectral cubes (``*_SpecCube.dat``, e.g. the HeiPorSPECTRAL archive).

Layout: a 12-byte header of three big-endian int32 (640, 480, 100), then big-endian float32
stored x-major with the y axis flipped, so the 480 x 640 x 100 image is ``np.rot90`` of the
stored (640, 480, 100) array. The values are already reflectance. Wavelengths are not stored;
the bands are spread evenly over ``ReadOptions.tivita_wavelength_range_nm`` (500-1000 nm).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..capture import Capture, SourceError
from .options import ReadOptions

HEADER_BYTES = 12
_HEADER_DTYPE = np.dtype(">i4")
_DATA_DTYPE = np.dtype(">f4")
_MAX_SIDE = 1 << 16  # larger values mean the file is not a TIVITA cube (or not big endian)


def tivita_wavelengths(bands: int, range_nm: tuple[float, float] = (500.0, 1000.0)) -> np.ndarray:
    """The assumed band centres: ``bands`` values evenly from range_nm[0] to range_nm[1] inclusive."""
    return np.linspace(range_nm[0], range_nm[1], bands)


def read_tivita_cube(path: str | Path) -> np.ndarray:
    """The (H, W, B) image of a TIVITA ``.dat`` file as a big-endian float32 memory-mapped view.

    Raises SourceError naming the file when the header or the size does not fit the layout.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise SourceError(f"{path}: {size} bytes; a TIVITA cube starts with a {HEADER_BYTES}-byte header "
                          "of three big-endian int32 (x, y, bands)")
    dims = tuple(int(v) for v in np.fromfile(path, dtype=_HEADER_DTYPE, count=3))
    if not all(0 < d <= _MAX_SIDE for d in dims):
        raise SourceError(f"{path}: header holds {dims} as big-endian int32; expected three positive sizes "
                          "such as (640, 480, 100): not a TIVITA cube")
    needed = HEADER_BYTES + int(np.prod(dims)) * _DATA_DTYPE.itemsize
    if size != needed:
        raise SourceError(f"{path}: {size} bytes, but a {dims[0]} x {dims[1]} x {dims[2]} TIVITA cube "
                          f"(header + big-endian float32) is {needed} bytes")
    stored = np.memmap(path, dtype=_DATA_DTYPE, mode="r", offset=HEADER_BYTES, shape=dims)
    return np.rot90(stored)  # x-major with y flipped -> rows = y, columns = x


def read_tivita(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """The ``.dat`` reader: one reflectance capture per TIVITA file."""
    cube = read_tivita_cube(path)
    lo, hi = options.tivita_wavelength_range_nm
    yield Capture(cube=cube, wavelengths_nm=tivita_wavelengths(cube.shape[2], (lo, hi)), calibration="reflectance",
                  metadata={"format": "tivita", "file": str(path), "stored_dtype": _DATA_DTYPE.name,
                            "byte_order": "big",
                            "wavelengths_assumed_nm": [lo, hi]})
