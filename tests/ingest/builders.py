"""Builders of capture files for the ingest tests, each from the format's documented layout."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from samsa_stream.ingest.formats.envi import write_envi


def write_tivita(path: Path, image: np.ndarray) -> Path:
    """A TIVITA ``.dat`` built byte by byte: three big-endian int32 (x, y, bands), then big-endian
    float32 stored x-major with the y axis flipped: byte block (x, y_stored, band) holds
    image[H - 1 - y_stored, x, band]."""
    h, w, b = image.shape
    out = bytearray(struct.pack(">3i", w, h, b))
    for x in range(w):
        for y_stored in range(h):
            out += struct.pack(f">{b}f", *image[h - 1 - y_stored, x, :].tolist())
    path.write_bytes(bytes(out))
    return path


def write_helicoid(folder: Path, raw: np.ndarray, white: np.ndarray, dark: np.ndarray, wavelengths_nm: np.ndarray,
                   labels: np.ndarray | None = None) -> Path:
    """A HELICoiD-style capture folder: ENVI files without data suffix, as the database stores them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, cube in (("raw", raw), ("whiteReference", white), ("darkReference", dark)):
        write_envi(folder / f"{name}.hdr", cube, wavelengths_nm, interleave="bil", data_suffix="")
    if labels is not None:
        write_envi(folder / "gtMap.hdr", labels[..., None].astype(np.uint8), data_suffix="")
    return folder


def header_text(**fields: str) -> str:
    """A minimal valid ENVI header for a 2 x 3 x 4 uint16 bsq cube, with ``fields`` replaced or added
    (a value of None removes the field). Keys use '_' for spaces."""
    base = {"samples": "3", "lines": "2", "bands": "4", "header_offset": "0", "data_type": "12",
            "interleave": "bsq", "byte_order": "0", "wavelength": "{400, 500, 600, 700}"}
    base.update(fields)
    lines = ["ENVI"] + [f"{k.replace('_', ' ')} = {v}" for k, v in base.items() if v is not None]
    return "\n".join(lines) + "\n"


def stored_view(image: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """An (H, W, B) view of ``image`` written in ``layout`` with ``dtype`` (byte order included), as readers
    map files: ENVI bil / bsq / bip, or TIVITA (x-major, y flipped)."""
    if layout == "bil":
        return np.ascontiguousarray(image.transpose(0, 2, 1), dtype=dtype).transpose(0, 2, 1)
    if layout == "bsq":
        return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=dtype).transpose(1, 2, 0)
    if layout == "bip":
        return np.ascontiguousarray(image, dtype=dtype)
    return np.rot90(np.ascontiguousarray(np.rot90(image, k=-1), dtype=dtype))
