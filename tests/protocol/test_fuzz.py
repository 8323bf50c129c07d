"""Every decoder turns any malformed message into a ProtocolError and nothing else.

Structure-aware: start from a valid message of each type, then replace one header field (or
one field of an array descriptor, or of an object entry) with a value of any msgpack type,
drop it, or flip bytes anywhere in the message. Receive loops rely on this: a decoder that
raised TypeError or OverflowError would end the process that called it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.protocol import (
    ClickPrompt,
    CubeFrame,
    FrameImage,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    PromptEvent,
    PromptReply,
    ProtocolError,
    SegmentationResult,
    StreamInfo,
    decode_prompt,
    encode_image,
)
from tests.conftest import phantom_frames

# Any value msgpack can carry, with the edge cases that broke receivers before: huge and negative
# integers, non-finite floats, wrong containers, long strings, bytes.
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=20), st.sampled_from(["", "/", "cam0/x", "<f4", "|u1", "x" * 70]),
)
VALUE = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=8)


def _masks(h: int, w: int) -> list[ObjectMask]:
    a = np.zeros((h, w), bool)
    a[1:4, 2:6] = True
    return [ObjectMask(1, "vessel", (230, 159, 0), a, 0.9), ObjectMask(2, "fat", (86, 180, 233), ~a, 0.5)]


def _samples() -> dict[str, tuple[list[bytes], Callable[[list[Any]], Any]]]:
    _, frames = phantom_frames(bands=8, height=10, width=12, count=1)
    frame = frames[0]
    frame.hops.append(["ingest_out", 5])
    h, w = frame.rgb.shape[:2]
    objects = _masks(h, w)
    messages = {
        "frame": (frame.to_parts(), CubeFrame.from_parts),
        "prompt": (ClickPrompt(stream_id="cam0", request_id=3, object_id=1, x=2.0, y=3.0, frame_id=0,
                               label="a").to_parts(), decode_prompt),
        "reply": (PromptReply(3, True, None, {"objects": []}, ["w"]).to_parts(), PromptReply.from_parts),
        "result": (SegmentationResult("cam0", 4, 5, frame.rgb, objects, "spectral", [["ingest_out", 6]],
                                      ["notice"]).to_parts(), SegmentationResult.from_parts),
        "masks": (MaskBroadcast("cam0", 4, 5, (h, w), objects, "spectral", 9, [["worker_out", 7]], ["n"],
                                "abc").to_parts(), MaskBroadcast.from_parts),
        "overlay": (OverlayImage("cam0", 4, 5, "png", encode_image(frame.rgb, "png"), 9, [], "abc").to_parts(),
                    OverlayImage.from_parts),
        "image": (FrameImage("cam0", 4, 5, "png", encode_image(frame.rgb, "png"), 9, [["publisher_out", 1]],
                             "abc").to_parts(), FrameImage.from_parts),
        "stream": (StreamInfo("cam0", 4, 5, (h, w), "spectral", [500.0, 600.0], ["n"],
                              [{**o.meta(), "area": int(o.mask.sum())} for o in objects], True, 12.5, 2, 9,
                              [["worker_out", 7]], "abc").to_parts(), StreamInfo.from_parts),
        "prompt_event": (PromptEvent("cam0", {"op": "click", "request_id": 3, "object_id": 1, "x": 2.0, "y": 3.0},
                                     True, None, 4, 2, 123, 5, "abc").to_parts(), PromptEvent.from_parts),
    }
    return {k: ([bytes(p) for p in parts], fn) for k, (parts, fn) in messages.items()}


SAMPLES = _samples()
KINDS = sorted(SAMPLES)


def _decode_or_protocol_error(decoder: Callable[[list[Any]], Any], parts: list[bytes]) -> None:
    try:
        decoder(parts)
    except ProtocolError:
        pass  # the only acceptable failure


@pytest.mark.parametrize("kind", KINDS)
def test_the_samples_decode(kind: str) -> None:
    parts, decoder = SAMPLES[kind]
    decoder(parts)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_any_header_field_of_any_type(kind: str, data: st.DataObject) -> None:
    parts, decoder = SAMPLES[kind]
    header = msgpack.unpackb(parts[0])
    key = data.draw(st.sampled_from(sorted(header) + ["unknown"]))
    if data.draw(st.booleans()):
        header[key] = data.draw(VALUE)
    else:
        header.pop(key, None)
    _decode_or_protocol_error(decoder, [msgpack.packb(header), *parts[1:]])


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["frame", "result", "masks", "overlay"]), data=st.data())
def test_any_nested_field_of_any_type(kind: str, data: st.DataObject) -> None:
    """Inside array descriptors, object entries, hops and sizes."""
    parts, decoder = SAMPLES[kind]
    header = msgpack.unpackb(parts[0])
    targets = [("arrays", i) for i in range(len(header["arrays"]))]
    targets += [("objects", i) for i in range(len(header.get("objects", [])))]
    targets += [("hops", i) for i in range(len(header.get("hops", [])))]
    container, index = data.draw(st.sampled_from(targets))
    entry = header[container][index]
    if isinstance(entry, dict):
        entry[data.draw(st.sampled_from(sorted(entry) + ["extra"]))] = data.draw(VALUE)
    else:
        entry[data.draw(st.integers(0, len(entry) - 1))] = data.draw(VALUE)
    _decode_or_protocol_error(decoder, [msgpack.packb(header), *parts[1:]])


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_flipped_bytes_anywhere(kind: str, data: st.DataObject) -> None:
    parts, decoder = SAMPLES[kind]
    mutated = [bytearray(p) for p in parts]
    for _ in range(data.draw(st.integers(1, 8))):
        part = data.draw(st.integers(0, len(mutated) - 1))
        if mutated[part]:
            at = data.draw(st.integers(0, len(mutated[part]) - 1))
            mutated[part][at] = data.draw(st.integers(0, 255))
    _decode_or_protocol_error(decoder, [bytes(p) for p in mutated])


@hsettings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_missing_extra_and_truncated_parts(kind: str, data: st.DataObject) -> None:
    parts, decoder = SAMPLES[kind]
    mutated = list(parts)
    action = data.draw(st.sampled_from(["drop", "add", "truncate", "empty"]))
    if action == "drop" and len(mutated) > 1:
        mutated.pop(data.draw(st.integers(1, len(mutated) - 1)))
    elif action == "add":
        mutated.append(data.draw(st.binary(max_size=16)))
    elif action == "truncate":
        part = data.draw(st.integers(0, len(mutated) - 1))
        mutated[part] = mutated[part][: data.draw(st.integers(0, max(0, len(mutated[part]) - 1)))]
    else:
        mutated = []
    _decode_or_protocol_error(decoder, mutated)


def test_a_shape_that_overflows_int64_is_refused() -> None:
    """2**62 x 4 elements wrapped to 0 bytes in int64 arithmetic; the size must be exact."""
    parts, _ = SAMPLES["result"]
    header = msgpack.unpackb(parts[0])
    header["arrays"][1]["shape"] = [2**62, 4, 0 + 1]
    with pytest.raises(ProtocolError, match="bytes, expected"):
        SegmentationResult.from_parts([msgpack.packb(header), *parts[1:]])
