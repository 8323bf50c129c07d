"""ENVI reading and writing, checked against SPy (an independent implementation) both ways."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import spectral.io.envi as spy_envi
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.ingest.formats import open_captures
from samsa_stream.ingest.formats.envi import DATA_TYPES, read_envi, read_header, to_reflectance, write_envi
from samsa_stream.ingest.sources import SourceError

from .builders import header_text

INTERLEAVES = ("bsq", "bil", "bip")
CODES = sorted(DATA_TYPES)  # 1, 2, 3, 4, 5, 12, 13, 14, 15


def _cube(dtype: np.dtype, shape: tuple[int, int, int] = (5, 7, 4), seed: int = 0) -> np.ndarray:
    """Values that use the type's range (negative, beyond 16 bits, fractions) so a byte-order or type slip shows."""
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, size=shape, dtype=np.int64 if info.min < 0 else np.uint64, endpoint=True).astype(dtype)


@pytest.mark.parametrize("interleave", INTERLEAVES)
@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("byteorder", [0, 1])
def test_spy_written_files_read_back_exactly(tmp_path: Path, interleave: str, code: int, byteorder: int) -> None:
    dtype = DATA_TYPES[code]
    cube = _cube(dtype)
    wavelengths = [450.5, 500.0, 612.25, 700.0]
    spy_envi.save_image(str(tmp_path / "c.hdr"), cube, interleave=interleave, byteorder=byteorder,
                        metadata={"wavelength": wavelengths, "wavelength units": "nm"})
    image = read_envi(tmp_path / "c.hdr")
    assert image.header.data_type == code
    assert image.header.byte_order == ("little" if byteorder == 0 else "big")
    assert image.cube.shape == cube.shape
    assert image.cube.dtype.newbyteorder("=") == dtype
    np.testing.assert_array_equal(np.asarray(image.cube), cube)
    np.testing.assert_array_equal(image.wavelengths_nm, wavelengths)
    assert isinstance(image.cube.base, np.memmap) or isinstance(image.cube, np.memmap)


@pytest.mark.parametrize("interleave", INTERLEAVES)
@pytest.mark.parametrize("code", [1, 2, 4, 5, 12, 15])
@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_our_writer_reads_back_in_spy(tmp_path: Path, interleave: str, code: int, byte_order: str) -> None:
    cube = _cube(DATA_TYPES[code], seed=1)
    write_envi(tmp_path / "c.hdr", cube, [400, 500, 600, 700], interleave=interleave, byte_order=byte_order,
               fwhm_nm=[10, 10, 12, 12])
    img = spy_envi.open(str(tmp_path / "c.hdr"))
    np.testing.assert_array_equal(img.open_memmap(interleave="bip"), cube)  # memmap: no scaling on SPy's side
    np.testing.assert_allclose(img.bands.centers, [400, 500, 600, 700])
    np.testing.assert_allclose(img.bands.bandwidths, [10, 10, 12, 12])


@hsettings(max_examples=25, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), b=st.integers(1, 5), interleave=st.sampled_from(INTERLEAVES),
       big=st.booleans(), offset=st.sampled_from([0, 7, 512]))
def test_round_trip_any_shape_and_offset(tmp_path_factory: pytest.TempPathFactory, h: int, w: int, b: int,
                                         interleave: str, big: bool, offset: int) -> None:
    folder = tmp_path_factory.mktemp("rt")
    cube = np.arange(h * w * b, dtype=np.float32).reshape(h, w, b) / 7
    wl = np.linspace(400, 900, b) if b > 1 else np.array([550.0])
    write_envi(folder / "c.hdr", cube, wl, interleave=interleave, byte_order="big" if big else "little",
               header_offset=offset)
    (capture,) = list(open_captures(folder / "c.hdr"))
    np.testing.assert_array_equal(capture.cube, cube)
    np.testing.assert_allclose(capture.wavelengths_nm, wl)
    assert capture.calibration == "reflectance"


def test_header_offset_written_by_hand_matches_spy(tmp_path: Path) -> None:
    cube = _cube(np.dtype("i2"), (3, 4, 2))
    (tmp_path / "c.raw").write_bytes(b"JUNKHEADER" + cube.transpose(2, 0, 1).astype(">i2").tobytes())
    (tmp_path / "c.hdr").write_text(header_text(samples="4", lines="3", bands="2", data_type="2", byte_order="1",
                                                header_offset="10", wavelength="{500, 600}"))
    ours = read_envi(tmp_path / "c.hdr").cube
    theirs = spy_envi.open(str(tmp_path / "c.hdr"), str(tmp_path / "c.raw")).open_memmap(interleave="bip")
    np.testing.assert_array_equal(ours, cube)
    np.testing.assert_array_equal(ours, theirs)


def test_micrometres_fwhm_and_bad_bands(tmp_path: Path) -> None:
    cube = _cube(np.dtype("f4"), (2, 3, 5))
    spy_envi.save_image(str(tmp_path / "c.hdr"), cube, metadata={
        "wavelength": [0.4, 0.5, 0.6, 0.7, 0.8], "wavelength units": "Micrometers",
        "fwhm": [0.01] * 5, "bbl": [1, 0, 1, 1, 0]})
    image = read_envi(tmp_path / "c.hdr")
    np.testing.assert_allclose(image.wavelengths_nm, [400, 600, 700])
    np.testing.assert_array_equal(image.cube, cube[..., [0, 2, 3]])
    np.testing.assert_allclose(image.header.fwhm_nm, [10] * 5)
    (capture,) = list(open_captures(tmp_path / "c.hdr"))
    assert capture.metadata["bad_bands_dropped"] == 2
    assert capture.metadata["fwhm_nm"] == pytest.approx([10, 10, 10])


def test_reflectance_scale_factor_gives_scaled_values_without_integer_overflow(tmp_path: Path) -> None:
    stored = np.array([[[0, 10000, 32767, 5000]]], dtype=np.int16)
    write_envi(tmp_path / "c.hdr", stored, [400, 500, 600, 700], reflectance_scale_factor=10000)
    (capture,) = list(open_captures(tmp_path / "c.hdr"))
    assert capture.calibration == "reflectance"
    assert capture.cube.dtype == np.float32
    np.testing.assert_allclose(capture.cube, [[[0.0, 1.0, 3.2767, 0.5]]], rtol=1e-6)
    # SPy's load() agrees on the value (it divides by the factor too); we read it without its help.
    np.testing.assert_allclose(np.asarray(spy_envi.open(str(tmp_path / "c.hdr")).load()), capture.cube, rtol=1e-6)


def test_data_ignore_value_becomes_nan(tmp_path: Path) -> None:
    stored = np.array([[[1, -9999], [3, 4]]], dtype=np.int16)
    write_envi(tmp_path / "c.hdr", stored, [500, 600], reflectance_scale_factor=10, data_ignore_value=-9999)
    (capture,) = list(open_captures(tmp_path / "c.hdr"))
    np.testing.assert_array_equal(np.isnan(capture.cube), [[[False, True], [False, False]]])
    assert capture.cube[0, 1, 0] == pytest.approx(0.3)


def test_integer_data_without_scale_is_raw_and_float_is_reflectance(tmp_path: Path) -> None:
    write_envi(tmp_path / "i.hdr", np.ones((2, 2, 2), np.uint16), [500, 600])
    write_envi(tmp_path / "f.hdr", np.ones((2, 2, 2), np.float32), [500, 600])
    assert to_reflectance(read_envi(tmp_path / "i.hdr"))[1] == "raw"
    assert to_reflectance(read_envi(tmp_path / "f.hdr"))[1] == "reflectance"


def test_missing_byte_order_reads_little_endian_with_a_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    cube = np.arange(24, dtype="<u2").reshape(2, 3, 4)
    (tmp_path / "c.img").write_bytes(cube.transpose(2, 0, 1).tobytes())
    (tmp_path / "c.hdr").write_text(header_text(byte_order=None))
    with caplog.at_level(logging.WARNING):
        (capture,) = list(open_captures(tmp_path / "c.hdr"))
    np.testing.assert_array_equal(capture.cube, cube)
    assert "byte order" in caplog.text
    assert any("little endian" in w for w in capture.metadata["warnings"])


@pytest.mark.parametrize("data_name", ["c", "c.raw", "c.img", "c.dat", "c.bil", "c.BIN", "c.hyspex"])
def test_data_file_found_next_to_the_header_under_usual_names(tmp_path: Path, data_name: str) -> None:
    cube = np.arange(24, dtype="<u2").reshape(2, 3, 4)
    (tmp_path / data_name).write_bytes(cube.transpose(2, 0, 1).tobytes())
    (tmp_path / "c.hdr").write_text(header_text())
    (capture,) = list(open_captures(tmp_path))  # a folder scan: the data file is not a capture of its own
    np.testing.assert_array_equal(capture.cube, cube)


def test_opening_the_data_file_finds_its_header(tmp_path: Path) -> None:
    cube = np.arange(24, dtype="<u2").reshape(2, 3, 4)
    (tmp_path / "c.dat").write_bytes(cube.transpose(2, 0, 1).tobytes())
    (tmp_path / "c.hdr").write_text(header_text())
    (capture,) = list(open_captures(tmp_path / "c.dat"))  # .dat with a header next to it is ENVI, not TIVITA
    np.testing.assert_array_equal(capture.cube, cube)
    assert capture.metadata["format"] == "envi"


def test_multiline_header_with_comments_and_crlf(tmp_path: Path) -> None:
    text = ("ENVI\r\ndescription = {a capture,\r\n  over two lines}\r\n; a comment\r\nsamples = 3\r\nlines = 2\r\n"
            "bands = 4\r\ndata type = 12\r\nInterleave = BSQ\r\nbyte order = 0\r\nwavelength = {\r\n 400,\r\n 500,"
            " 600,\r\n 700 }\r\n")
    (tmp_path / "c.hdr").write_text(text)
    (tmp_path / "c").write_bytes(np.zeros(24, "<u2").tobytes())
    header = read_header(tmp_path / "c.hdr")
    assert header.interleave == "bsq"
    np.testing.assert_array_equal(header.wavelengths_nm, [400, 500, 600, 700])
    assert header.fields["description"] == "a capture,\n  over two lines"


# Every malformed header is refused with a message that names the file and the problem.
MALFORMED = [
    ({"samples": None}, "required field 'samples' is missing"),
    ({"lines": "two"}, "field 'lines' must be an integer, got 'two'"),
    ({"bands": "0"}, "field 'bands' must be >= 1, got 0"),
    ({"data_type": "7"}, "'data type' = 7 is not an ENVI data type"),
    ({"data_type": "6"}, "complex64; a reflectance cube must be real-valued"),
    ({"data_type": None}, "required field 'data type' is missing"),
    ({"interleave": "bsx"}, "'interleave' = 'bsx'; expected bsq, bil or bip"),
    ({"interleave": None}, "required field 'interleave' is missing"),
    ({"byte_order": "2"}, "'byte order' = '2'; expected 0 (little endian) or 1 (big endian)"),
    ({"header_offset": "-4"}, "field 'header offset' must be >= 0"),
    ({"wavelength": "{400, 500, 600}"}, "field 'wavelength' has 3 value(s) for 4 band(s)"),
    ({"wavelength": "{400, 500, six hundred, 700}"}, "field 'wavelength' value 3 is 'six hundred'"),
    ({"wavelength": "{400, 500, 600, 700"}, "field 'wavelength' (line 9) opens '{' that is never closed"),
    ({"wavelength_units": "GHz"}, "'wavelength units' 'GHz' is not a length unit"),
    ({"fwhm": "{1, 2}"}, "field 'fwhm' has 2 value(s) for 4 band(s)"),
    ({"bbl": "{1, 0, 2, 1}"}, "'bbl' must hold 0 (bad band) or 1 (good band)"),
    ({"bbl": "{0, 0, 0, 0}"}, "'bbl' marks every band bad"),
    ({"reflectance_scale_factor": "0"}, "'reflectance scale factor' must be a positive number"),
    ({"reflectance_scale_factor": "{1, 2}"}, "field 'reflectance scale factor' must be one value"),
    ({"data_ignore_value": "n/a"}, "field 'data ignore value' must be a number, got 'n/a'"),
]


@pytest.mark.parametrize("fields,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_header_is_rejected_with_a_message(tmp_path: Path, fields: dict, message: str) -> None:
    (tmp_path / "c.hdr").write_text(header_text(**fields))
    (tmp_path / "c.img").write_bytes(np.zeros(24, "<u2").tobytes())
    (error,) = list(open_captures(tmp_path / "c.hdr"))
    assert isinstance(error, SourceError)
    assert message in str(error)
    assert "c.hdr" in str(error)


def test_not_a_header_and_garbage_lines(tmp_path: Path) -> None:
    (tmp_path / "a.hdr").write_text("samples = 3\n")
    (tmp_path / "b.hdr").write_bytes(b"ENVI\nsamples = 3\n\xff\xfe\x00")
    (tmp_path / "c.hdr").write_text("ENVI\nsamples 3\n")
    errors = [str(e) for e in open_captures(tmp_path)]
    assert "a.hdr: not an ENVI header (the first line must be 'ENVI')" in errors[0]
    assert "b.hdr: not an ENVI header (binary, not text)" in errors[1]
    assert "c.hdr: line 2 'samples 3' is not 'field = value'" in errors[2]


def test_missing_and_short_data_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "c.hdr").write_text(header_text())
    (error,) = list(open_captures(tmp_path / "c.hdr"))
    assert "c.hdr: no data file next to the header (looked for c, c.raw, c.img" in str(error)
    (tmp_path / "c.img").write_bytes(b"\0" * 47)
    (error,) = list(open_captures(tmp_path / "c.hdr"))
    assert "c.img: 47 bytes, but the header (c.hdr) needs 48" in str(error)


def test_missing_wavelengths_refused_for_a_capture(tmp_path: Path) -> None:
    write_envi(tmp_path / "c.hdr", np.zeros((2, 2, 3), np.float32))
    (error,) = list(open_captures(tmp_path / "c.hdr"))
    assert "no 'wavelength' field; the node needs one wavelength per band" in str(error)


def test_writer_refuses_what_envi_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end in .hdr"):
        write_envi(tmp_path / "c.img", np.zeros((1, 1, 1)))
    with pytest.raises(ValueError, match="no ENVI data type"):
        write_envi(tmp_path / "c.hdr", np.zeros((1, 1, 1), np.float16))
    with pytest.raises(ValueError, match="interleave"):
        write_envi(tmp_path / "c.hdr", np.zeros((1, 1, 1)), interleave="xyz")
