"""HELICoiD-style capture folders: one capture per folder, as the HELICoiD in-vivo brain database
stores them.

    <capture>/raw + raw.hdr                          raw counts (ENVI)
    <capture>/whiteReference + whiteReference.hdr    white panel (ENVI, same bands and samples)
    <capture>/darkReference + darkReference.hdr      shutter closed (ENVI)
    <capture>/gtMap + gtMap.hdr                      optional label map (ENVI, one band)

The capture is delivered raw with both references; the normalizer calibrates it
(ingest.calibration), so the white panel's reflectance stays a setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..capture import Capture, SourceError
from .envi import image_metadata, read_envi
from .options import ReadOptions

RAW, WHITE, DARK, LABELS = "raw", "whiteReference", "darkReference", "gtMap"


def is_helicoid_folder(folder: Path) -> bool:
    """A folder holding ``raw.hdr`` and at least one of the references (a capture folder, not a recording)."""
    return (folder / f"{RAW}.hdr").is_file() and any((folder / f"{n}.hdr").is_file() for n in (WHITE, DARK))


def read_helicoid(folder: Path, options: ReadOptions) -> Iterator[Capture]:
    """The capture of a HELICoiD folder: raw counts, white and dark references, label map if present."""
    raw = read_envi(folder / f"{RAW}.hdr")
    if raw.wavelengths_nm is None:
        raise SourceError(f"{folder / (RAW + '.hdr')}: no 'wavelength' field; the node needs one wavelength per band")
    references = {}
    for name in (WHITE, DARK):
        header = folder / f"{name}.hdr"
        if not header.is_file():
            raise SourceError(f"{folder}: HELICoiD capture without {name}.hdr; raw counts need both white "
                              "and dark references")
        ref = read_envi(header)
        if ref.cube.shape[1:] != raw.cube.shape[1:]:
            raise SourceError(f"{header}: {ref.cube.shape[1]} samples x {ref.cube.shape[2]} bands, the raw cube has "
                              f"{raw.cube.shape[1]} x {raw.cube.shape[2]} (after bad bands are dropped)")
        references[name] = np.asarray(ref.cube)
    labels = None
    label_header = folder / f"{LABELS}.hdr"
    if label_header.is_file():
        label_image = read_envi(label_header)
        if label_image.cube.shape[2] != 1 or label_image.cube.shape[:2] != raw.cube.shape[:2]:
            raise SourceError(f"{label_header}: label map is {label_image.cube.shape}, expected "
                              f"{raw.cube.shape[0]} x {raw.cube.shape[1]} x 1")
        labels = np.asarray(label_image.cube[..., 0]).astype(np.int32)
    metadata = image_metadata(raw) | {"format": "helicoid", "folder": str(folder)}
    # Raw, references and any scale share the same units, so the stored values go to calibration as they are.
    yield Capture(cube=raw.cube, wavelengths_nm=raw.wavelengths_nm, calibration="raw", labels=labels,
                  metadata=metadata, white=references[WHITE], dark=references[DARK])
