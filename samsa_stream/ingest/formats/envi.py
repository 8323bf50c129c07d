"""ENVI: a text header (``.hdr``) next to a headerless binary file.

Read: interleave bsq / bil / bip, data types 1, 2, 3, 4, 5, 12, 13, 14, 15, either byte order
(a header without ``byte order`` is read little endian, with a warning), ``header offset``,
``wavelength`` in nm or micrometres, ``fwhm``, ``bbl`` (bad bands dropped), ``reflectance scale
factor`` (the capture is the scaled value) and ``data ignore value`` (those pixels become NaN,
which the normalizer replaces and counts). The data file is memory-mapped, never read whole.

Calibration state: float data, or data with a reflectance scale factor, is reflectance; integer
data without one is raw sensor counts that need white/dark references (see ingest.calibration).

Write: ``write_envi`` saves a cube with its wavelengths, for exports and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..capture import Capture, SourceError
from .layout import CubeBuffers, to_float32
from .options import ReadOptions

log = logging.getLogger(__name__)

# ENVI data type code -> numpy type (byte order applied separately).
DATA_TYPES: dict[int, np.dtype] = {
    1: np.dtype("u1"), 2: np.dtype("i2"), 3: np.dtype("i4"), 4: np.dtype("f4"), 5: np.dtype("f8"),
    12: np.dtype("u2"), 13: np.dtype("u4"), 14: np.dtype("i8"), 15: np.dtype("u8"),
}
COMPLEX_TYPES = {6: "complex64", 9: "complex128"}
INTERLEAVES = ("bsq", "bil", "bip")
# Where the binary lies, tried in this order after the header's own stem (``cube.hdr`` -> ``cube``).
DATA_SUFFIXES = (".raw", ".img", ".dat", ".bsq", ".bil", ".bip", ".bin", ".sli", ".hyspex", ".cube")
_NM_PER_UNIT = {"nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1000.0, "micrometer": 1000.0,
                "micrometres": 1000.0, "micrometre": 1000.0, "microns": 1000.0, "micron": 1000.0, "um": 1000.0,
                "µm": 1000.0, "millimeters": 1e6, "millimeter": 1e6, "mm": 1e6}
_UNKNOWN_UNITS = ("", "unknown")
# Scaled cubes are written into recycled arrays once the frames made from them are dropped.
_SCALED = CubeBuffers()


@dataclass
class EnviHeader:
    """The fields of an ENVI header the node uses, checked; ``fields`` keeps every field as text."""

    path: Path
    samples: int
    lines: int
    bands: int
    data_type: int
    interleave: str
    byte_order: str  # "little" or "big"
    header_offset: int = 0
    wavelengths_nm: np.ndarray | None = None  # (bands,) as stored, converted to nm
    fwhm_nm: np.ndarray | None = None
    bbl: np.ndarray | None = None  # (bands,) bool, True = good band
    reflectance_scale_factor: float | None = None
    data_ignore_value: float | None = None
    fields: dict[str, str | list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def dtype(self) -> np.dtype:
        return DATA_TYPES[self.data_type].newbyteorder("<" if self.byte_order == "little" else ">")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(lines, samples, bands) = (H, W, B) as stored, before bad bands are dropped."""
        return self.lines, self.samples, self.bands

    @property
    def data_bytes(self) -> int:
        return self.lines * self.samples * self.bands * self.dtype.itemsize


@dataclass
class EnviImage:
    """A header and its data as an (H, W, B) array view (memory-mapped; bad bands already dropped)."""

    header: EnviHeader
    data_path: Path
    cube: np.ndarray
    wavelengths_nm: np.ndarray | None
    good_bands: np.ndarray  # (bands,) bool over the stored bands


# ---------------------------------------------------------------------------------------- header


def parse_header_text(text: str, where: str) -> dict[str, str | list[str]]:
    """Header text -> {lower-case field name: value}; ``{a, b}`` lists become lists of strings
    (``description`` stays one string). Raises SourceError naming ``where`` on a malformed header."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().startswith("ENVI"):
        raise SourceError(f"{where}: not an ENVI header (the first line must be 'ENVI')")
    fields: dict[str, str | list[str]] = {}
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SourceError(f"{where}: line {i} {line.strip()[:60]!r} is not 'field = value'")
        key = " ".join(key.lower().split())
        value = value.strip()
        if value.startswith("{"):
            start = i
            while "}" not in value:
                if i >= len(lines):
                    raise SourceError(f"{where}: field {key!r} (line {start}) opens '{{' that is never closed")
                value += "\n" + lines[i]
                i += 1
            inner = value[1:value.index("}")]
            fields[key] = inner.strip() if key == "description" else [v.strip() for v in inner.split(",") if v.strip()]
        else:
            fields[key] = value
    return fields


def _scalar(fields: dict[str, Any], key: str, where: str) -> str | None:
    value = fields.get(key)
    if isinstance(value, list):
        if len(value) != 1:
            raise SourceError(f"{where}: field {key!r} must be one value, got a list of {len(value)}")
        value = value[0]
    return value


def _int_field(fields: dict[str, Any], key: str, where: str, minimum: int, default: int | None = None) -> int:
    value = _scalar(fields, key, where)
    if value is None:
        if default is None:
            raise SourceError(f"{where}: required field {key!r} is missing")
        return default
    try:
        number = int(value)
    except ValueError:
        raise SourceError(f"{where}: field {key!r} must be an integer, got {value!r}") from None
    if number < minimum:
        raise SourceError(f"{where}: field {key!r} must be >= {minimum}, got {number}")
    return number


def _float_list(fields: dict[str, Any], key: str, where: str, bands: int) -> np.ndarray | None:
    value = fields.get(key)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    numbers = np.empty(len(items), dtype=np.float64)
    for i, item in enumerate(items):
        try:
            numbers[i] = float(item)
        except ValueError:
            raise SourceError(f"{where}: field {key!r} value {i + 1} is {item!r}, which is not a number") from None
    if numbers.size != bands:
        raise SourceError(f"{where}: field {key!r} has {numbers.size} value(s) for {bands} band(s); "
                          "expected one per band")
    return numbers


def _float_field(fields: dict[str, Any], key: str, where: str) -> float | None:
    value = _scalar(fields, key, where)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise SourceError(f"{where}: field {key!r} must be a number, got {value!r}") from None


def _wavelength_scale(fields: dict[str, Any], wavelengths: np.ndarray, where: str, warnings: list[str]) -> float:
    units = (_scalar(fields, "wavelength units", where) or "").strip()
    key = units.lower()
    if key in _NM_PER_UNIT:
        return _NM_PER_UNIT[key]
    if key in _UNKNOWN_UNITS:
        # Without units, micrometre-sized values (0.4-2.5) are micrometres; anything larger is nm.
        scale = 1000.0 if np.nanmax(wavelengths) < 30.0 else 1.0
        warnings.append(f"no 'wavelength units'; read as {'micrometres' if scale == 1000.0 else 'nm'} by magnitude")
        return scale
    raise SourceError(f"{where}: 'wavelength units' {units!r} is not a length unit the node reads "
                      "(expected Nanometers or Micrometers)")


def read_header(path: str | Path) -> EnviHeader:
    """Parse and check an ENVI header. Raises SourceError naming the file, the field and what was expected."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise SourceError(f"{where}: not an ENVI header (binary, not text)") from None
    except OSError as exc:
        raise SourceError(f"{where}: cannot read the header ({exc.strerror or exc})") from None
    fields = parse_header_text(text.lstrip("\ufeff"), where)
    samples = _int_field(fields, "samples", where, 1)
    lines = _int_field(fields, "lines", where, 1)
    bands = _int_field(fields, "bands", where, 1)
    data_type = _int_field(fields, "data type", where, 0)
    if data_type in COMPLEX_TYPES:
        raise SourceError(f"{where}: 'data type' = {data_type} is {COMPLEX_TYPES[data_type]}; "
                          "a reflectance cube must be real-valued")
    if data_type not in DATA_TYPES:
        known = ", ".join(f"{k} ({v.name})" for k, v in DATA_TYPES.items())
        raise SourceError(f"{where}: 'data type' = {data_type} is not an ENVI data type the node reads "
                          f"(known: {known})")
    interleave = (_scalar(fields, "interleave", where) or "").strip().lower()
    if not interleave:
        raise SourceError(f"{where}: required field 'interleave' is missing (expected bsq, bil or bip)")
    if interleave not in INTERLEAVES:
        raise SourceError(f"{where}: 'interleave' = {interleave!r}; expected bsq, bil or bip")
    warnings: list[str] = []
    order = _scalar(fields, "byte order", where)
    if order is None:
        warnings.append("no 'byte order' field; read as little endian (byte order = 0)")
        log.warning("%s: no 'byte order' field; reading it as little endian", where)
        byte_order = "little"
    elif order.strip() in ("0", "1"):
        byte_order = "little" if order.strip() == "0" else "big"
    else:
        raise SourceError(f"{where}: 'byte order' = {order!r}; expected 0 (little endian) or 1 (big endian)")
    offset = _int_field(fields, "header offset", where, 0, default=0)
    wavelengths = _float_list(fields, "wavelength", where, bands)
    fwhm = _float_list(fields, "fwhm", where, bands)
    if wavelengths is not None:
        scale = _wavelength_scale(fields, wavelengths, where, warnings)
        wavelengths = wavelengths * scale
        fwhm = None if fwhm is None else fwhm * scale
    bbl_values = _float_list(fields, "bbl", where, bands)
    bbl = None
    if bbl_values is not None:
        if not np.all(np.isin(bbl_values, (0.0, 1.0))):
            raise SourceError(f"{where}: 'bbl' must hold 0 (bad band) or 1 (good band) per band")
        bbl = bbl_values == 1.0
        if not bbl.any():
            raise SourceError(f"{where}: 'bbl' marks every band bad; nothing is left to read")
    scale_factor = _float_field(fields, "reflectance scale factor", where)
    if scale_factor is not None and not (np.isfinite(scale_factor) and scale_factor > 0):
        raise SourceError(f"{where}: 'reflectance scale factor' must be a positive number, got {scale_factor:g}")
    return EnviHeader(path=path, samples=samples, lines=lines, bands=bands, data_type=data_type,
                      interleave=interleave, byte_order=byte_order, header_offset=offset,
                      wavelengths_nm=wavelengths, fwhm_nm=fwhm, bbl=bbl, reflectance_scale_factor=scale_factor,
                      data_ignore_value=_float_field(fields, "data ignore value", where), fields=fields,
                      warnings=warnings)


# ------------------------------------------------------------------------------------------ data


def header_path_for(path: Path) -> Path | None:
    """The header of an ENVI data file or header path: ``x.hdr`` itself, ``x.hdr`` for ``x`` or ``x.raw``,
    or ``x.raw.hdr``; None when there is none."""
    if path.suffix.lower() == ".hdr":
        return path
    for candidate in (path.with_name(path.name + ".hdr"), path.with_suffix(".hdr"), path.with_suffix(".HDR")):
        if candidate.is_file():
            return candidate
    return None


def data_candidates(header_path: Path) -> list[Path]:
    """Where the data file of ``header_path`` may lie, in the order they are tried."""
    stem = header_path.with_suffix("")
    return [stem] + [stem.with_name(stem.name + s) for suffix in DATA_SUFFIXES for s in (suffix, suffix.upper())]


def find_data_file(header_path: Path) -> Path:
    """The binary next to ``header_path`` (same stem, no suffix or a usual one), or SourceError listing
    where it looked."""
    candidates = data_candidates(header_path)
    for candidate in candidates:
        if candidate.is_file() and candidate != header_path:
            return candidate
    tried = ", ".join(p.name for p in candidates[:1] + candidates[1::2])
    raise SourceError(f"{header_path}: no data file next to the header (looked for {tried})")


def read_envi(path: str | Path) -> EnviImage:
    """Header + memory-mapped data as (H, W, B) with bad bands (``bbl``) dropped; values as stored.

    ``path`` is the header or its data file. Raises SourceError naming the file and problem.
    """
    path = Path(path)
    header_path = header_path_for(path)
    if header_path is None:
        raise SourceError(f"{path}: no ENVI header next to it (looked for {path.name}.hdr and {path.stem}.hdr)")
    header = read_header(header_path)
    data_path = path if path != header_path else find_data_file(header_path)
    size = data_path.stat().st_size
    needed = header.header_offset + header.data_bytes
    if size < needed:
        raise SourceError(
            f"{data_path}: {size} bytes, but the header ({header_path.name}) needs {needed}: header offset "
            f"{header.header_offset} + {header.lines} lines x {header.samples} samples x {header.bands} bands x "
            f"{header.dtype.itemsize} bytes ({header.dtype.name})")
    h, w, b = header.shape
    stored = {"bsq": (b, h, w), "bil": (h, b, w), "bip": (h, w, b)}[header.interleave]
    to_hwb = {"bsq": (1, 2, 0), "bil": (0, 2, 1), "bip": (0, 1, 2)}[header.interleave]
    data = np.memmap(data_path, dtype=header.dtype, mode="r", offset=header.header_offset, shape=stored)
    cube: np.ndarray = data.transpose(to_hwb)
    good = header.bbl if header.bbl is not None else np.ones(b, dtype=bool)
    wavelengths = header.wavelengths_nm
    if not good.all():
        cube = cube[..., good]
        wavelengths = None if wavelengths is None else wavelengths[good]
    return EnviImage(header=header, data_path=data_path, cube=cube, wavelengths_nm=wavelengths, good_bands=good)


def to_reflectance(image: EnviImage) -> tuple[np.ndarray, str]:
    """The image as the node ingests it, and its calibration state ("reflectance" or "raw").

    Applies ``reflectance scale factor`` (float32 result) and turns ``data ignore value`` pixels into
    NaN; otherwise returns the stored values untouched (still memory-mapped).
    """
    header, cube = image.header, image.cube
    scale = header.reflectance_scale_factor
    ignore = header.data_ignore_value
    if scale is None and ignore is None:
        return cube, "reflectance" if cube.dtype.kind == "f" else "raw"
    # One pass over the file, C order (H, W, B) whatever the interleave.
    out = to_float32(cube, scale, ignore, out=_SCALED.take(cube.shape, np.float32))
    return out, "reflectance" if scale is not None or cube.dtype.kind == "f" else "raw"


def image_metadata(image: EnviImage) -> dict[str, Any]:
    """What a frame's source metadata records about the file (msgpack-friendly types only)."""
    header = image.header
    meta: dict[str, Any] = {"format": "envi", "file": str(header.path), "data_file": str(image.data_path),
                            "interleave": header.interleave, "byte_order": header.byte_order,
                            "stored_dtype": header.dtype.name, "data_type": header.data_type}
    if header.reflectance_scale_factor is not None:
        meta["reflectance_scale_factor"] = header.reflectance_scale_factor
    if header.data_ignore_value is not None:
        meta["data_ignore_value"] = header.data_ignore_value
    if header.fwhm_nm is not None:
        meta["fwhm_nm"] = [float(v) for v in header.fwhm_nm[image.good_bands]]
    dropped = int(np.count_nonzero(~image.good_bands))
    if dropped:
        meta["bad_bands_dropped"] = dropped
    if header.warnings:
        meta["warnings"] = list(header.warnings)
    return meta


def read_envi_captures(path: Path, options: ReadOptions) -> Iterator[Capture]:
    """One capture per ENVI image (``path`` is the header or its data file)."""
    image = read_envi(path)
    if image.wavelengths_nm is None:
        raise SourceError(f"{path}: no 'wavelength' field; the node needs one wavelength per band")
    cube, calibration = to_reflectance(image)
    yield Capture(cube=cube, wavelengths_nm=image.wavelengths_nm, calibration=calibration,
                  metadata=image_metadata(image))


# ----------------------------------------------------------------------------------------- write


def _format_list(values: Sequence[float] | np.ndarray) -> str:
    return "{\n " + ",\n ".join(", ".join(repr(float(v)) for v in values[i:i + 8])
                                for i in range(0, len(values), 8)) + "}"


def write_envi(header_path: str | Path, cube: np.ndarray, wavelengths_nm: Sequence[float] | np.ndarray | None = None,
               *, interleave: str = "bsq", dtype: str | np.dtype | None = None, byte_order: str = "little",
               data_suffix: str = ".img", fwhm_nm: Sequence[float] | np.ndarray | None = None,
               bbl: Sequence[int] | np.ndarray | None = None, reflectance_scale_factor: float | None = None,
               data_ignore_value: float | None = None, header_offset: int = 0,
               description: str | None = None) -> Path:
    """Write ``cube`` (H, W, B) as ENVI: ``header_path`` (``.hdr``) and the data file ``<stem><data_suffix>``.

    ``dtype`` defaults to the cube's; it must be one of DATA_TYPES. Wavelengths are written in nm.
    ``header_offset`` zero bytes precede the data. Returns the data file's path.
    """
    header_path = Path(header_path)
    if header_path.suffix.lower() != ".hdr":
        raise ValueError(f"{header_path}: an ENVI header path must end in .hdr")
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"cube must be H x W x B, got shape {cube.shape}")
    if interleave not in INTERLEAVES:
        raise ValueError(f"interleave must be bsq, bil or bip, got {interleave!r}")
    if byte_order not in ("little", "big"):
        raise ValueError(f"byte_order must be 'little' or 'big', got {byte_order!r}")
    base = np.dtype(dtype or cube.dtype).newbyteorder("=")
    codes = {v: k for k, v in DATA_TYPES.items()}
    if base not in codes:
        known = ", ".join(str(v) for v in DATA_TYPES.values())
        raise ValueError(f"dtype {base} has no ENVI data type (known: {known})")
    h, w, b = cube.shape
    order = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    stored_dtype = base.newbyteorder("<" if byte_order == "little" else ">")
    stored = np.ascontiguousarray(cube.transpose(order), dtype=stored_dtype)
    data_path = header_path.with_suffix(data_suffix) if data_suffix else header_path.with_suffix("")
    with open(data_path, "wb") as fh:
        fh.write(b"\0" * header_offset)
        stored.tofile(fh)
    lines = ["ENVI"]
    if description:
        lines.append(f"description = {{{description}}}")
    lines += [f"samples = {w}", f"lines = {h}", f"bands = {b}", f"header offset = {header_offset}",
              "file type = ENVI Standard", f"data type = {codes[base]}", f"interleave = {interleave}",
              f"byte order = {0 if byte_order == 'little' else 1}"]
    if reflectance_scale_factor is not None:
        lines.append(f"reflectance scale factor = {reflectance_scale_factor:.10g}")
    if data_ignore_value is not None:
        lines.append(f"data ignore value = {data_ignore_value:.10g}")
    if wavelengths_nm is not None:
        lines += ["wavelength units = Nanometers", f"wavelength = {_format_list(wavelengths_nm)}"]
    if fwhm_nm is not None:
        lines.append(f"fwhm = {_format_list(fwhm_nm)}")
    if bbl is not None:
        lines.append("bbl = {" + ", ".join(str(int(v)) for v in bbl) + "}")
    header_path.write_text("\n".join(lines) + "\n")
    return data_path
