"""The ENVI header parser on any text: a header is read or refused with a SourceError, nothing else; and a
header that declares a cube larger than its data file is refused before anything is allocated or mapped.

tests/ingest/test_damaged_files.py damages the bytes of whole captures (ENVI among them); here the
header text itself is generated, field by field and as free text.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.ingest.capture import SourceError
from samsa_stream.ingest.formats import envi, open_captures, read_entry
from samsa_stream.ingest.formats.envi import parse_header_text, read_envi, read_header

VALID = {"samples": "4", "lines": "3", "bands": "2", "header offset": "0", "data type": "4", "interleave": "bsq",
         "byte order": "0", "wavelength units": "Nanometers", "wavelength": "{500, 600}", "fwhm": "{10, 10}",
         "bbl": "{1, 1}", "reflectance scale factor": "1", "data ignore value": "-1"}

# Values that broke header parsers: huge and negative numbers, lists where scalars go, unclosed braces,
# non-numbers, non-finite numbers, digits of other scripts, long runs of digits.
FIELD_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "1e3", "nan", "inf", "-inf", "1" * 5000, "99999999999999999999", "{", "}",
                     "{1, 2", "{}", "{,}", "{1}{2}", "bsq", "BIP", "2", "1_0", "\u0663", "{nan, nan}",
                     "{inf, 1}", "{0, 2}", "{1, 0}", "{0, 0}", "Micrometers", "furlongs", "unknown"]),
    st.text(max_size=20),
    st.lists(st.sampled_from(["1", "0", "nan", "-3", "500", "x", ""]), max_size=5).map(
        lambda v: "{" + ", ".join(v) + "}"),
)


def _text(fields: dict[str, str]) -> str:
    return "ENVI\n" + "\n".join(f"{k} = {v}" for k, v in fields.items()) + "\n"


def _read_or_refuse(path: Path) -> None:
    try:
        read_header(path)
    except SourceError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_field_of_any_value(tmp_path: Path, data: st.DataObject) -> None:
    fields = dict(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(VALID) + ["description", "extra field"]))
        if data.draw(st.integers(0, 3)) == 0:
            fields.pop(key, None)
        else:
            fields[key] = data.draw(FIELD_VALUES)
    path = tmp_path / "cube.hdr"
    path.write_text(_text(fields), encoding="utf-8", errors="surrogatepass")
    _read_or_refuse(path)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_after_the_magic_line(text: str) -> None:
    try:
        parse_header_text("ENVI\n" + text, "fuzz.hdr")
    except SourceError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_header_file(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "cube.hdr"
    path.write_bytes(b"ENVI\n" + raw if raw[:1] != b"E" else raw)
    _read_or_refuse(path)


def _declare_huge(tmp_path: Path) -> Path:
    """A header that declares a 100000 x 100000 x 1000 cube (10**13 bytes of uint8), next to a 12-byte file."""
    fields = {**VALID, "samples": "100000", "lines": "100000", "bands": "1000", "data type": "1",
              "wavelength": "{" + ", ".join(str(400 + i * 0.5) for i in range(1000)) + "}"}
    for key in ("fwhm", "bbl"):
        fields.pop(key)
    header = tmp_path / "huge.hdr"
    header.write_text(_text(fields))
    (tmp_path / "huge.img").write_bytes(b"\x00" * 12)
    return header


def test_a_huge_declared_cube_is_refused_before_anything_is_allocated(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    header = _declare_huge(tmp_path)

    def no_mapping(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reader mapped the cube before checking the file size")

    small_empty = np.empty

    def only_small(shape: int | tuple[int, ...], *args: Any, **kwargs: Any) -> np.ndarray:
        if int(np.prod(shape)) > 100_000:  # the header's own lists (1000 wavelengths) are fine
            raise AssertionError(f"the reader allocated {shape} before checking the file size")
        return small_empty(shape, *args, **kwargs)

    monkeypatch.setattr(envi.np, "memmap", no_mapping)
    monkeypatch.setattr(envi.np, "fromfile", no_mapping)
    monkeypatch.setattr(envi.np, "empty", only_small)
    tracemalloc.start()
    try:
        with pytest.raises(SourceError, match=r"12 bytes, but the header \(huge.hdr\) needs 10000000000000"):
            read_envi(header)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes allocated to refuse the header"


def test_the_capture_readers_refuse_it_the_same_way(tmp_path: Path) -> None:
    header = _declare_huge(tmp_path)
    with pytest.raises(SourceError, match="needs 10000000000000"):
        list(read_entry(header))
    (only,) = list(open_captures(tmp_path))  # a recording with it plays on: its place holds the error
    assert isinstance(only, SourceError)


def test_a_declared_offset_past_the_end_is_refused(tmp_path: Path) -> None:
    fields = {**VALID, "header offset": str(2**62)}
    header = tmp_path / "cube.hdr"
    header.write_text(_text(fields))
    (tmp_path / "cube.img").write_bytes(np.zeros((2, 3, 4), "<f4").tobytes())
    with pytest.raises(SourceError, match="needs"):
        read_envi(header)
