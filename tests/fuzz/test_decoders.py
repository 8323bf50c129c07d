"""What tests/protocol/test_fuzz.py (header fields, nested fields, byte flips and parts of every message
of docs/protocol.md) does not ask: every decoder fed every other message type and random bytes, the maps
inside StreamInfo's legend and PromptEvent's request, and the memory a decoder may take: never more than
the message's own size allows, whatever sizes its header declares.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.protocol import (
    CubeFrame,
    MaskBroadcast,
    ProtocolError,
    SegmentationResult,
    StreamInfo,
    decode_prompt,
)
from samsa_stream.protocol.messages import MAX_MASK_PIXELS, MAX_SIDE
from tests.protocol.test_fuzz import SAMPLES, VALUE

Decoder = Callable[[list[Any]], Any]
KINDS = sorted(SAMPLES)


@contextmanager
def allocation_peak() -> Iterator[list[int]]:
    """The most memory Python and numpy held at once inside the block, in bytes (``peak[0]``)."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def decode_bounded(decoder: Decoder, parts: list[bytes]) -> None:
    """Decode; only a ProtocolError may come out, and the decoder may not hold much more memory than the
    message itself (decoded run lengths are bounded separately, by MAX_MASK_PIXELS)."""
    size = sum(len(p) for p in parts)
    with allocation_peak() as peak:
        try:
            decoder(parts)
        except ProtocolError:
            pass
    assert peak[0] <= 1_000_000 + 16 * size, f"{peak[0]} bytes allocated for a {size}-byte message"


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_field_inside_a_legend_entry_or_a_request(data: st.DataObject) -> None:
    """StreamInfo's objects (legend) and PromptEvent's request are maps of their own."""
    kind = data.draw(st.sampled_from(["stream", "prompt_event"]))
    parts, decoder = SAMPLES[kind]
    header = msgpack.unpackb(parts[0])
    entry = header["objects"][data.draw(st.integers(0, 1))] if kind == "stream" else header["request"]
    key = data.draw(st.sampled_from(sorted(entry) + ["extra"]))
    if data.draw(st.booleans()):
        entry[key] = data.draw(VALUE)
    else:
        entry.pop(key, None)
    decode_bounded(decoder, [msgpack.packb(header), *parts[1:]])


@pytest.mark.parametrize("kind", KINDS)
def test_every_decoder_refuses_every_other_message_type(kind: str) -> None:
    _, decoder = SAMPLES[kind]
    for other, (parts, _) in SAMPLES.items():
        if other == kind:
            continue
        with pytest.raises(ProtocolError):
            decoder(parts)


@hsettings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KINDS), parts=st.lists(st.binary(max_size=64), max_size=4))
def test_random_bytes_in_any_decoder(kind: str, parts: list[bytes]) -> None:
    decode_bounded(SAMPLES[kind][1], parts)


# -- declared sizes: a few bytes must not make a receiver allocate much -------------------------------------


def _header(kind: str) -> dict[str, Any]:
    return msgpack.unpackb(SAMPLES[kind][0][0])


def _huge_cube_frame() -> list[bytes]:
    parts = SAMPLES["frame"][0]
    header = _header("frame")
    spec = next(s for s in header["arrays"] if s["name"] == "cube")
    spec["shape"] = [100_000, 100_000, 1000]
    return [msgpack.packb(header), *parts[1:]]


def _huge_result() -> list[bytes]:
    header = _header("result")
    header["arrays"][1]["shape"] = [2, 30_000, 30_000]  # masks declared 1.8 GB, sent as a few bytes
    return [msgpack.packb(header), *SAMPLES["result"][0][1:]]


def _mask_bomb() -> list[bytes]:
    """256 whole-image masks of the largest size, each declared by two run lengths: 64 GiB decoded."""
    header = _header("masks")
    side = 16384
    header["size"] = [side, side]
    header["objects"] = [{"id": i + 1, "label": "", "colour": [1, 2, 3], "score": 0.5} for i in range(256)]
    run = np.array([0, side * side], dtype="<u4")
    header["arrays"] = [{"name": f"rle{i}", "dtype": "<u4", "shape": [2]} for i in range(256)]
    return [msgpack.packb(header), *[run.tobytes()] * 256]


def _two_largest_masks() -> list[bytes]:
    header = _header("masks")
    header["size"] = [MAX_SIDE, MAX_MASK_PIXELS // MAX_SIDE]
    header["objects"] = header["objects"][:2]
    run = np.array([0, MAX_MASK_PIXELS], dtype="<u4")
    header["arrays"] = [{"name": f"rle{i}", "dtype": "<u4", "shape": [2]} for i in range(2)]
    return [msgpack.packb(header), run.tobytes(), run.tobytes()]


def _huge_stream_info() -> list[bytes]:
    header = _header("stream")
    header["size"] = [100_000, 100_000]
    return [msgpack.packb(header)]


def _msgpack_declares_4g_items() -> list[bytes]:
    return [b"\xdd\xff\xff\xff\xff" + b"\x00" * 16]  # array32 of 2**32 - 1 entries, 16 bytes sent


def _msgpack_declares_4g_bytes() -> list[bytes]:
    return [b"\x81\xa1v\xc6\xff\xff\xff\xff" + b"\x00" * 16]  # {"v": bin32 of 4 GiB}, 16 bytes sent


@pytest.mark.parametrize(("make", "decoder"), [
    (_huge_cube_frame, CubeFrame.from_parts), (_huge_result, SegmentationResult.from_parts),
    (_mask_bomb, MaskBroadcast.from_parts), (_two_largest_masks, MaskBroadcast.from_parts),
    (_huge_stream_info, StreamInfo.from_parts), (_msgpack_declares_4g_items, CubeFrame.from_parts),
    (_msgpack_declares_4g_bytes, decode_prompt)], ids=lambda v: getattr(v, "__name__", "").strip("_"))
def test_a_declared_size_beyond_the_limits_is_refused_before_any_allocation(make: Callable[[], list[bytes]],
                                                                            decoder: Decoder) -> None:
    parts = make()
    with allocation_peak() as peak, pytest.raises(ProtocolError):
        decoder(parts)
    assert peak[0] < 2_000_000, f"{peak[0]} bytes allocated before the message was refused"


def test_one_largest_mask_is_within_the_limit() -> None:
    """The bound is on all objects together: one mask of MAX_MASK_PIXELS is still a valid broadcast."""
    header = _header("masks")
    header["size"] = [1024, 1024]
    header["objects"] = header["objects"][:1]
    header["arrays"] = [{"name": "rle0", "dtype": "<u4", "shape": [2]}]
    msg = MaskBroadcast.from_parts([msgpack.packb(header), np.array([0, 1 << 20], "<u4").tobytes()])
    assert msg.objects[0].mask.all() and msg.objects[0].mask.shape == (1024, 1024)
