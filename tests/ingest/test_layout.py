"""Blocked layout conversion: every stored layout, dtype and byte order gives exactly numpy's plain copy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.ingest.formats.layout import CubeBuffers, convert_rows, rows_per_block, to_float32

from .builders import stored_view

DTYPES = ["f4", "f2", "i2", "u2", "u1", "i4", "f8"]


def values(rng: np.random.Generator, shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    kind = np.dtype(dtype)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(kind)
    image = rng.normal(0.0, 100.0, size=shape).astype(kind)
    specials = np.array([np.nan, np.inf, -0.0], dtype=kind)[: image.size]
    image.reshape(-1)[rng.permutation(image.size)[: specials.size]] = specials  # bits must survive as they are
    return image


@hsettings(max_examples=150, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 7), b=st.integers(1, 6), dtype=st.sampled_from(DTYPES),
       order=st.sampled_from("<>"), layout=st.sampled_from(["bil", "bsq", "bip", "tivita"]),
       rows=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_blocked_conversion_equals_a_plain_copy(h: int, w: int, b: int, dtype: str, order: str, layout: str,
                                                rows: int, seed: int) -> None:
    image = values(np.random.default_rng(seed), (h, w, b), dtype)
    view = stored_view(image, layout, order + dtype)
    expected = np.empty((h, w, b), np.float32)
    np.copyto(expected, view, casting="unsafe")
    got = to_float32(view, rows=rows)  # a block size that need not divide H
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))  # bit for bit, NaN and -0 too
    block = np.full((min(rows, h), w, b), 7.0, np.float32)
    convert_rows(view[h - block.shape[0]:], block)  # a block at the end, on its own
    np.testing.assert_array_equal(block.view(np.uint32), expected[h - block.shape[0]:].view(np.uint32))


@pytest.mark.parametrize("layout", ["bil", "bsq", "bip", "tivita"])
@pytest.mark.parametrize("dtype", [">f4", "<f4", ">i2", "<u2", "<f2"])
def test_a_camera_sized_cube_converts_exactly(layout: str, dtype: str) -> None:
    rng = np.random.default_rng(3)
    image = (rng.random((37, 64, 25)) * 3000).astype(np.dtype(dtype).newbyteorder("="))
    view = stored_view(image, layout, dtype)
    np.testing.assert_array_equal(to_float32(view, rows=5), image.astype(np.float32))


def test_scale_and_ignore_value_match_the_one_pass_formula() -> None:
    image = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 7
    view = stored_view(image, "bsq", ">i2")
    got = to_float32(view, scale=10000.0, ignore_value=14.0, rows=1)
    expected = np.multiply(image, np.float32(1 / 10000.0), dtype=np.float32)
    expected[image == 14] = np.nan
    np.testing.assert_array_equal(got, expected)


def test_bad_output_rows_are_refused() -> None:
    src = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="same"):
        convert_rows(src, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="float32"):
        convert_rows(src, np.zeros((2, 3, 4), np.float64))


def test_rows_per_block_is_at_least_one() -> None:
    assert rows_per_block(640, 100) >= 1
    assert rows_per_block(10**6, 10**3) == 1


def test_buffers_are_reused_only_once_nothing_holds_them() -> None:
    buffers = CubeBuffers(keep=2)
    first = buffers.take((2, 3, 4), np.float32)
    address = first.ctypes.data
    view = first[1:]
    del first
    second = buffers.take((2, 3, 4), np.float32)
    assert second.ctypes.data != address  # a view still holds the first
    del view
    third = buffers.take((2, 3, 4), np.float32)
    assert third.ctypes.data == address
    held = memoryview(third)  # an exported buffer (a zero-copy send) holds it too
    del third
    assert buffers.take((2, 3, 4), np.float32).ctypes.data != address
    del held
    assert buffers.take((2, 3, 4), np.float32).ctypes.data == address
    assert buffers.take((5, 3, 4), np.float32).shape == (5, 3, 4)


def test_buffers_of_two_dtypes_of_one_shape_are_both_kept() -> None:
    buffers = CubeBuffers(keep=4)
    addresses = {buffers.take((2, 3, 4), dtype).ctypes.data for dtype in (np.float32, np.float16)}
    assert {buffers.take((2, 3, 4), dtype).ctypes.data for dtype in (np.float32, np.float16)} == addresses
