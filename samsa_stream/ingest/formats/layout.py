"""Stored layouts -> the node's C-ordered (H, W, B) float32 cube, a block of rows at a time.

A reader delivers its cube as an (H, W, B) view of the stored values (a memory map: BIL, BSQ, BIP,
TIVITA's flipped x-major layout, either byte order, any real dtype). ``convert_rows`` turns a block of
those rows into float32 in one pass while the block is in cache, with the same values as
``np.copyto(out, view, casting="unsafe")``:
- band axis strided, sample axis contiguous (BIL, BSQ): one 2-D transpose per row (OpenCV's, a
  tiled copy far faster than numpy's element-wise strided loop), moving raw bits, then the cast;
- band axis contiguous but pixels scattered (TIVITA): each pixel's spectrum moves as one opaque
  element (numpy copies it with a memcpy, not band by band), then the cast;
- anything else: numpy's own copy.
``to_float32`` runs it over a whole cube on the process's block pool (``threads.map_blocks``).
``CubeBuffers`` recycles output cubes: a fresh 100 MB array costs as much again as filling it
(the kernel zeroes and maps every page on first touch).
"""

from __future__ import annotations

import threading
import weakref

import cv2
import numpy as np

from ...threads import map_blocks

# Target bytes of float32 output per block: a few blocks per thread, each small enough to stay in L2.
BLOCK_BYTES = 1 << 20

# Element size -> a native dtype OpenCV transposes (raw bits are moved, never interpreted).
_BITS: dict[int, np.dtype] = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.int32)}
_FLOAT32 = np.dtype(np.float32)


def rows_per_block(width: int, bands: int, block_bytes: int = BLOCK_BYTES) -> int:
    """How many (W, B) float32 rows make one block of about ``block_bytes``; at least one."""
    return max(1, block_bytes // max(1, width * bands * _FLOAT32.itemsize))


def _check(src: np.ndarray, out: np.ndarray) -> None:
    if src.ndim != 3 or src.shape != out.shape:
        raise ValueError(f"source rows {src.shape} and output rows {out.shape} must be the same (r, W, B) shape")
    if out.dtype != _FLOAT32 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"output rows must be writable C-ordered float32, got {out.dtype}")
    if src.dtype.kind not in "fiu":
        raise ValueError(f"source dtype {src.dtype} is not a real number type")


def _transpose_rows(bits: np.ndarray, dst: np.ndarray) -> None:
    """dst[i] = bits[i] for (r, W, B) ``bits`` whose sample axis is contiguous, into C-ordered ``dst``."""
    for i in range(bits.shape[0]):
        row = dst[i]
        result = cv2.transpose(bits[i].T, row)
        if result.ctypes.data != row.ctypes.data:  # OpenCV allocates when it cannot write into dst
            row[...] = result


def convert_rows(src: np.ndarray, out: np.ndarray) -> None:
    """Write the (r, W, B) stored rows ``src`` (any real dtype, byte order and strides) into the C-ordered
    float32 rows ``out``, value for value as ``np.copyto(out, src, casting="unsafe")``."""
    _check(src, out)
    r, w, b = src.shape
    size = src.dtype.itemsize
    if src.size == 0:
        return
    if src.dtype == _FLOAT32 and src.flags.c_contiguous:
        out[...] = src
        return
    if b > 1 and w > 1 and src.strides[1] == size and size in _BITS:
        bits = src.view(_BITS[size])
        if src.dtype == _FLOAT32:
            _transpose_rows(bits, out.view(_BITS[size]))
        else:
            scratch = np.empty((r, w, b), dtype=_BITS[size])
            _transpose_rows(bits, scratch)
            np.copyto(out, scratch.view(src.dtype), casting="unsafe")
        return
    if src.strides[2] == size and not src.flags.c_contiguous and w > 1:
        # Scattered pixels, contiguous spectra: each spectrum moves as one element.
        spectrum = np.dtype((np.void, b * size))
        pixels = src.view(spectrum)[..., 0]
        if src.dtype == _FLOAT32:
            np.copyto(out.view(spectrum)[..., 0], pixels)
        else:
            scratch = np.empty((r, w, b), dtype=src.dtype)
            np.copyto(scratch.view(spectrum)[..., 0], pixels)
            np.copyto(out, scratch, casting="unsafe")
        return
    np.copyto(out, src, casting="unsafe")


def to_float32(cube: np.ndarray, scale: float | None = None, ignore_value: float | None = None,
               out: np.ndarray | None = None, rows: int | None = None) -> np.ndarray:
    """A C-ordered float32 (H, W, B) copy of any (H, W, B) view (in ``out`` when given, else a new array),
    converted block by block on the pool.

    ``scale``: each value is multiplied by float32(1 / scale) (as ``np.multiply(cube, np.float32(1 / scale),
    dtype=np.float32)``). ``ignore_value``: elements equal to it as stored become NaN. ``rows``: rows per
    block (default ``rows_per_block``)."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"cube must be H x W x B, got shape {cube.shape}")
    h, w, b = cube.shape
    if out is None:
        out = np.empty((h, w, b), dtype=_FLOAT32)
    elif out.shape != cube.shape:
        raise ValueError(f"out is {out.shape}, the cube is {cube.shape}")
    target = out
    factor = None if scale is None else np.float32(1.0 / scale)

    def work(start: int, stop: int) -> None:
        rows = target[start:stop]
        convert_rows(cube[start:stop], rows)
        if factor is not None:
            np.multiply(rows, factor, out=rows)
        if ignore_value is not None:
            rows[cube[start:stop] == ignore_value] = np.nan  # compared as stored: exact for every integer type

    map_blocks(work, h, rows or rows_per_block(w, b))
    return out


class _Lease:
    """The base of one array handed out by ``CubeBuffers``; numpy keeps it as the base of every view,
    so it lives exactly as long as something still uses the buffer."""

    __slots__ = ("__array_interface__", "__weakref__", "store")

    def __init__(self, store: np.ndarray) -> None:
        self.store = store
        self.__array_interface__ = store.__array_interface__


class CubeBuffers:
    """Output arrays that are reused once nothing holds them any more (no view, no exported buffer).

    ``take`` returns a C-ordered array of the shape and dtype asked for, with undefined contents: a
    recycled one when one is free, else a new one, kept for reuse while fewer than ``keep`` are kept.
    Thread-safe."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._kept: list[tuple[np.ndarray, weakref.ref[_Lease] | None]] = []

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype = np.dtype(dtype)
        with self._lock:
            # Arrays of another shape are dropped once free: the stream changed its frames.
            self._kept = [(store, lease) for store, lease in self._kept
                          if store.shape == shape or (lease is not None and lease())]
            for i, (store, lease) in enumerate(self._kept):
                if store.shape == shape and store.dtype == dtype and (lease is None or lease() is None):
                    return self._lend(i, store)
            store = np.empty(shape, dtype=dtype)
            if len(self._kept) >= self.keep:
                return store
            self._kept.append((store, None))
            return self._lend(len(self._kept) - 1, store)

    def _lend(self, i: int, store: np.ndarray) -> np.ndarray:
        lease = _Lease(store)
        self._kept[i] = (store, weakref.ref(lease))
        return np.asarray(lease)
