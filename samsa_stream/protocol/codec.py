"""The envelope every message shares: one msgpack header part, then one part per array.

``[header][array 0][array 1]...``; the header's ``arrays`` list names each following
part's name, dtype and shape. Arrays travel as their raw little-endian bytes (C order),
so a sender can hand numpy buffers to ZeroMQ without copying. See docs/protocol.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from ..errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 256
# Integers on the wire are signed 64-bit (clients in languages without them read them as doubles, exact below 2**53).
INT64_MAX = 2**63 - 1

# Wire dtypes: little-endian (or byte-sized) only, so any client can read them without guessing.
WIRE_DTYPES = frozenset({"|u1", "|i1", "|b1", "<u2", "<i2", "<u4", "<i4", "<f2", "<f4", "<f8", "<i8", "<u8"})




def now_ns() -> int:
    return time.time_ns()


def _wire_array(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    if array.dtype.str not in WIRE_DTYPES:
        raise ProtocolError(f"array {name!r}: dtype {array.dtype} cannot travel (allowed: {sorted(WIRE_DTYPES)})")
    return np.ascontiguousarray(array)


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> list[Any]:
    """Header dict + named arrays -> multipart parts (arrays are not copied when contiguous)."""
    header = dict(header)
    header.setdefault("v", PROTOCOL_VERSION)
    parts: list[Any] = [b""]
    specs = []
    for name, array in (arrays or {}).items():
        wire = _wire_array(name, array)
        specs.append({"name": name, "dtype": wire.dtype.str, "shape": list(wire.shape)})
        parts.append(wire.data.cast("B") if wire.size else b"")  # .data: the array's own memoryview, no copy
    header["arrays"] = specs
    parts[0] = msgpack.packb(header, use_bin_type=True)
    return parts


def _as_buffer(part: Any) -> memoryview:
    buffer = getattr(part, "buffer", None)  # zmq.Frame
    return memoryview(buffer if buffer is not None else part).cast("B")


def decode(parts: Sequence[Any],
           expect_type: str | Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Multipart parts -> (header, arrays). Arrays are read-only views on the received buffers.

    Raises ProtocolError for a truncated or padded message, bad msgpack, a wrong version,
    an unknown dtype or a buffer whose size does not match its declared shape.
    """
    if not parts:
        raise ProtocolError("empty message: expected a msgpack header part")
    raw_header = _as_buffer(parts[0])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header is {len(raw_header)} bytes, more than the {MAX_HEADER_BYTES} allowed")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"header is not valid msgpack: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (this node speaks v{PROTOCOL_VERSION})")
    kind = header.get("type")
    if expect_type is not None:
        allowed = (expect_type,) if isinstance(expect_type, str) else tuple(expect_type)
        if kind not in allowed:
            raise ProtocolError(f"message type {kind!r} where {' or '.join(allowed)} was expected")
    specs = header.get("arrays", [])
    if not isinstance(specs, list):
        raise ProtocolError("header field 'arrays' must be a list")
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"header declares {len(specs)} arrays, more than the {MAX_ARRAYS} allowed")
    if len(specs) != len(parts) - 1:
        raise ProtocolError(f"header declares {len(specs)} array part(s) but the message has {len(parts) - 1}"
                            " (truncated or padded message)")
    arrays: dict[str, np.ndarray] = {}
    for spec, part in zip(specs, parts[1:], strict=True):
        arrays_name, array = _decode_array(spec, _as_buffer(part))
        if arrays_name in arrays:
            raise ProtocolError(f"array {arrays_name!r} appears twice in the message")
        arrays[arrays_name] = array
    return header, arrays


def _decode_array(spec: Any, buffer: memoryview) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict) or not {"name", "dtype", "shape"} <= spec.keys():
        raise ProtocolError(f"array spec {spec!r} must have name, dtype and shape")
    name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    if not isinstance(name, str):
        raise ProtocolError(f"array name {name!r} must be a string")
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        raise ProtocolError(f"array {name!r}: dtype {dtype!r} is not a wire dtype {sorted(WIRE_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= INT64_MAX for n in shape):
        raise ProtocolError(f"array {name!r}: shape {shape!r} must be a list of at most 8 non-negative integers")
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize  # exact: a huge shape cannot wrap around to a small size
    if len(buffer) != expected:
        raise ProtocolError(f"array {name!r}: {len(buffer)} bytes, expected {expected} for {dtype} {tuple(shape)}")
    array = np.frombuffer(buffer, dtype=dt).reshape(shape)
    array.flags.writeable = False
    return name, array


def stamp(hops: list[list[Any]], hop: str) -> None:
    """Append ``[hop, now_ns]`` to a message's per-hop timestamps."""
    hops.append([hop, now_ns()])
