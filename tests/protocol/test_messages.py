"""Round trips of every message type and every malformed case the receivers must reject."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samsa_stream.protocol import (
    PROMPTS,
    PROTOCOL_VERSION,
    ClickPrompt,
    CubeFrame,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    PromptReply,
    PromptRequest,
    ProtocolError,
    RemovePrompt,
    ResetPrompt,
    SegmentationResult,
    StatePrompt,
    StatusPrompt,
    UndoPrompt,
    decode,
    decode_prompt,
    encode,
    rle_decode,
    rle_encode,
)
from tests.conftest import phantom_frames


def _bytes(parts: list) -> list[bytes]:
    """What a receiver gets: every part as bytes."""
    return [bytes(p) for p in parts]


@pytest.fixture
def frame() -> CubeFrame:
    _, frames = phantom_frames(bands=16, height=12, width=20, count=1)
    f = frames[0]
    f.hops.append(["ingest_out", 123])
    return f


def test_frame_round_trip(frame: CubeFrame) -> None:
    back = CubeFrame.from_parts(_bytes(frame.to_parts()))
    assert back.stream_id == frame.stream_id and back.frame_id == frame.frame_id
    assert back.capture_ns == frame.capture_ns and back.hops == frame.hops
    np.testing.assert_array_equal(back.cube, frame.cube)
    np.testing.assert_array_equal(back.wavelengths_nm, frame.wavelengths_nm)
    np.testing.assert_array_equal(back.rgb, frame.rgb)
    np.testing.assert_array_equal(back.labels, frame.labels)
    assert back.cube.dtype == np.float32


def test_float16_cube_travels(frame: CubeFrame) -> None:
    frame.cube = frame.cube.astype(np.float16)
    back = CubeFrame.from_parts(_bytes(frame.to_parts()))
    assert back.cube.dtype == np.float16
    np.testing.assert_array_equal(back.cube, frame.cube)


def test_big_endian_array_is_sent_little_endian() -> None:
    data = np.arange(6, dtype=">f4").reshape(2, 3)
    header, arrays = decode(_bytes(encode({"type": "x"}, {"a": data})))
    assert header["arrays"][0]["dtype"] == "<f4"
    np.testing.assert_array_equal(arrays["a"], data)


def test_arrays_are_not_copied_on_send(frame: CubeFrame) -> None:
    parts = frame.to_parts()
    cube_part = parts[1]
    assert isinstance(cube_part, memoryview)
    assert np.shares_memory(np.frombuffer(cube_part, dtype=np.float32), frame.cube)


@pytest.mark.parametrize("req", [
    ClickPrompt(stream_id="cam0", request_id=7, object_id=2, x=10.5, y=3.0, positive=False, frame_id=9, label="tumour"),
    ClickPrompt(stream_id="cam0", object_id=1, x=0, y=0),
    UndoPrompt(stream_id="a.b-c_d", request_id=2**63 - 1, object_id=3),
    UndoPrompt(stream_id="cam0"),
    RemovePrompt(stream_id="cam0", object_id=5),
    ResetPrompt(stream_id="cam0", request_id=1),
    StatePrompt(stream_id="cam0"),
    StatusPrompt(request_id=4),
])
def test_prompt_round_trip(req: PromptRequest) -> None:
    back = decode_prompt(_bytes(req.to_parts()))
    assert type(back) is type(req) and back == req
    assert type(PromptRequest.from_parts(_bytes(req.to_parts()))) is type(req)
    assert set(PROMPTS) == {"click", "undo", "remove", "reset", "state", "status"}


def test_prompt_of_another_op_than_expected_is_refused() -> None:
    with pytest.raises(ProtocolError, match="op 'reset' where 'click' was expected") as err:
        ClickPrompt.from_parts(_bytes(ResetPrompt(stream_id="cam0", request_id=9).to_parts()))
    assert err.value.request_id == 9


def test_reply_round_trip() -> None:
    rep = PromptReply(request_id=3, ok=False, error="unknown object 4", state={"objects": []})
    assert PromptReply.from_parts(_bytes(rep.to_parts())) == rep
    rep = PromptReply(request_id=4, ok=True, warnings=["not saved: read-only file system"])
    assert PromptReply.from_parts(_bytes(rep.to_parts())) == rep


def _objects(h: int, w: int) -> list[ObjectMask]:
    a = np.zeros((h, w), bool)
    a[2:5, 3:9] = True
    b = np.zeros((h, w), bool)
    b[0, 0] = b[-1, -1] = True
    return [ObjectMask(1, "liver", (255, 0, 0), a, 0.9), ObjectMask(3, "vessel", (0, 0, 255), b, 0.4)]


def test_result_and_broadcast_round_trip(frame: CubeFrame) -> None:
    h, w = frame.rgb.shape[:2]
    res = SegmentationResult("cam0", 5, 99, frame.rgb, _objects(h, w), "spectral", hops=[["w", 1]], notices=["n"])
    back = SegmentationResult.from_parts(_bytes(res.to_parts()))
    assert [o.object_id for o in back.objects] == [1, 3] and back.notices == ["n"]
    for a, b in zip(res.objects, back.objects, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert (a.label, a.colour) == (b.label, b.colour)
    cast = MaskBroadcast("cam0", 5, 99, (h, w), res.objects, "spectral", seq=4, hops=[["p", 2]])
    back2 = MaskBroadcast.from_parts(_bytes(cast.to_parts()))
    assert back2.seq == 4 and back2.size == (h, w)
    for a, b in zip(res.objects, back2.objects, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)


def test_overlay_round_trip() -> None:
    ov = OverlayImage("cam0", 1, 2, "png", b"\x89PNG fake bytes", seq=1)
    back = OverlayImage.from_parts(_bytes(ov.to_parts()))
    assert bytes(back.data) == b"\x89PNG fake bytes" and back.encoding == "png"


# -- malformed input ---------------------------------------------------------------------------

def test_truncated_multipart_is_rejected(frame: CubeFrame) -> None:
    parts = _bytes(frame.to_parts())
    with pytest.raises(ProtocolError, match="truncated or padded"):
        CubeFrame.from_parts(parts[:-1])
    with pytest.raises(ProtocolError, match="truncated or padded"):
        CubeFrame.from_parts(parts + [b"extra"])
    with pytest.raises(ProtocolError, match="empty message"):
        CubeFrame.from_parts([])


def test_truncated_buffer_is_rejected(frame: CubeFrame) -> None:
    parts = _bytes(frame.to_parts())
    parts[1] = parts[1][:-4]
    with pytest.raises(ProtocolError, match="array 'cube'.*bytes, expected"):
        CubeFrame.from_parts(parts)


def test_bad_msgpack_is_rejected(frame: CubeFrame) -> None:
    parts = _bytes(frame.to_parts())
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        CubeFrame.from_parts([b"\xc1\xff\x00garbage", *parts[1:]])
    with pytest.raises(ProtocolError, match="must be a msgpack map"):
        CubeFrame.from_parts([msgpack.packb([1, 2, 3])])


def test_wrong_version_is_rejected(frame: CubeFrame) -> None:
    header = msgpack.unpackb(_bytes(frame.to_parts())[0])
    header["v"] = PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match="protocol version 2 is not supported"):
        CubeFrame.from_parts([msgpack.packb(header), *_bytes(frame.to_parts())[1:]])


def test_wrong_message_type_is_rejected(frame: CubeFrame) -> None:
    with pytest.raises(ProtocolError, match="message type 'frame' where prompt was expected"):
        PromptRequest.from_parts(_bytes(frame.to_parts()))


def _with_header(parts: list[bytes], **changes: object) -> list[bytes]:
    header = msgpack.unpackb(parts[0])
    header.update(changes)
    return [msgpack.packb(header), *parts[1:]]


def test_wrong_dtype_and_shape_are_rejected(frame: CubeFrame) -> None:
    parts = _bytes(frame.to_parts())
    header = msgpack.unpackb(parts[0])
    specs = header["arrays"]
    specs[0]["dtype"] = ">f4"
    with pytest.raises(ProtocolError, match="not a wire dtype"):
        CubeFrame.from_parts(_with_header(parts, arrays=specs))
    specs[0]["dtype"] = "<i4"  # same itemsize, wrong kind for a cube
    with pytest.raises(ProtocolError, match="cube dtype must be float32 or float16"):
        CubeFrame.from_parts(_with_header(parts, arrays=specs))
    specs[0]["dtype"] = "<f4"
    h, w, b = frame.cube.shape
    specs[0]["shape"] = [h * w, b]
    with pytest.raises(ProtocolError, match="cube must be H x W x B"):
        CubeFrame.from_parts(_with_header(parts, arrays=specs))
    specs[0]["shape"] = [h, w, -b]
    with pytest.raises(ProtocolError, match="non-negative integers"):
        CubeFrame.from_parts(_with_header(parts, arrays=specs))


def test_nan_and_inf_cubes_are_rejected(frame: CubeFrame) -> None:
    for bad in (np.nan, np.inf, -np.inf):
        cube = frame.cube.copy()
        cube[3, 4, 5] = bad
        frame_bad = CubeFrame(**{**frame.__dict__, "cube": cube})
        with pytest.raises(ProtocolError, match="1 NaN/inf value"):
            CubeFrame.from_parts(_bytes(frame_bad.to_parts()))


def test_huge_but_finite_cube_is_not_mistaken_for_nan(frame: CubeFrame) -> None:
    cube = np.full(frame.cube.shape, 3e38, np.float32)  # the float32 sum overflows; every value is finite
    back = CubeFrame.from_parts(_bytes(CubeFrame(**{**frame.__dict__, "cube": cube}).to_parts()))
    assert back.cube.max() == np.float32(3e38)


def test_wavelength_and_rgb_mismatches_are_rejected(frame: CubeFrame) -> None:
    wl = frame.wavelengths_nm.copy()
    wl[3] = wl[2]
    with pytest.raises(ProtocolError, match="strictly increasing"):
        CubeFrame.from_parts(_bytes(CubeFrame(**{**frame.__dict__, "wavelengths_nm": wl}).to_parts()))
    with pytest.raises(ProtocolError, match="wavelengths for 16 bands"):
        CubeFrame.from_parts(_bytes(CubeFrame(**{**frame.__dict__, "wavelengths_nm": wl[:-1]}).to_parts()))
    with pytest.raises(ProtocolError, match="rgb must be uint8"):
        CubeFrame.from_parts(_bytes(CubeFrame(**{**frame.__dict__, "rgb": frame.rgb[:, :-1]}).to_parts()))
    with pytest.raises(ProtocolError, match="label map"):
        CubeFrame.from_parts(_bytes(CubeFrame(**{**frame.__dict__, "labels": frame.labels[:-1]}).to_parts()))


def test_missing_header_fields_are_named(frame: CubeFrame) -> None:
    parts = _bytes(frame.to_parts())
    header = msgpack.unpackb(parts[0])
    del header["frame_id"]
    with pytest.raises(ProtocolError, match="'frame_id' is missing"):
        CubeFrame.from_parts([msgpack.packb(header), *parts[1:]])
    with pytest.raises(ProtocolError, match="'stream' must be a string"):
        CubeFrame.from_parts(_with_header(parts, stream=5))
    with pytest.raises(ProtocolError, match="'capture_ns' must be an integer"):
        CubeFrame.from_parts(_with_header(parts, capture_ns=True))


@pytest.mark.parametrize("fields, message", [
    ({"op": "paint"}, "unknown op 'paint'"),
    ({"op": "state", "stream": "cam0/x"}, "not a stream id"),
    ({"op": "state", "stream": ""}, "not a stream id"),
    ({"op": "state", "stream": "c" * 65}, "more than 64"),
    ({"op": "click", "object_id": 0, "x": 1.0, "y": 2.0}, "'object_id' must be between 1"),
    ({"op": "click", "object_id": 2**40, "x": 1.0, "y": 2.0}, "'object_id' must be between 1"),
    ({"op": "click", "object_id": 1, "x": 1.0, "y": 2.0, "positive": 1}, "'positive' must be true or false"),
    ({"op": "click", "object_id": 1, "x": 1.0, "y": 2.0, "label": ["a"]}, "'label' must be a string"),
    ({"op": "click", "object_id": 1, "x": True, "y": 2.0}, "'x' must be a number"),
    ({"op": "click", "object_id": 1, "x": 1.0}, "click needs y"),
    ({"op": "click", "object_id": 1, "x": float("nan"), "y": 2.0}, "'x' must be a finite number"),
    ({"op": "click", "object_id": "one", "x": 1.0, "y": 2.0}, "'object_id' must be an integer"),
    ({"op": "click", "object_id": 1, "x": "left", "y": 2.0}, "'x' must be a number"),
    ({"op": "remove"}, "remove needs object_id"),
])
def test_malformed_prompts_are_rejected(fields: dict, message: str) -> None:
    header = {"v": PROTOCOL_VERSION, "type": "prompt", "stream": "cam0", "request_id": 41, **fields}
    with pytest.raises(ProtocolError, match=message) as err:
        decode_prompt([msgpack.packb(header)])
    assert err.value.request_id == 41  # readable, so the error reply reaches the console


@pytest.mark.parametrize("header", [
    {"v": PROTOCOL_VERSION + 1, "type": "prompt", "op": "state", "stream": "cam0", "request_id": 12},
    {"v": PROTOCOL_VERSION, "type": "frame", "op": "state", "stream": "cam0", "request_id": 12},
    {"v": PROTOCOL_VERSION, "type": "prompt", "stream": "cam0", "request_id": 12},
])
def test_request_id_is_read_even_when_the_envelope_is_wrong(header: dict) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_prompt([msgpack.packb(header)])
    assert err.value.request_id == 12


@pytest.mark.parametrize("parts", [[b"\xc1"], [msgpack.packb([1, 2])],
                                   [msgpack.packb({"v": 1, "type": "prompt", "op": "state", "request_id": "x"})],
                                   [msgpack.packb({"v": 1, "type": "prompt", "op": "state", "request_id": -1})]])
def test_unreadable_request_ids_stay_unknown(parts: list) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_prompt(parts)
    assert err.value.request_id is None


def test_result_with_masks_for_wrong_object_count_is_rejected(frame: CubeFrame) -> None:
    h, w = frame.rgb.shape[:2]
    parts = _bytes(SegmentationResult("cam0", 1, 1, frame.rgb, _objects(h, w), "spectral").to_parts())
    header = msgpack.unpackb(parts[0])
    header["objects"] = header["objects"][:1]
    with pytest.raises(ProtocolError, match="do not match 1 object"):
        SegmentationResult.from_parts([msgpack.packb(header), *parts[1:]])


def test_broadcast_with_bad_run_lengths_is_rejected() -> None:
    mask = np.zeros((4, 5), bool)
    broadcast = MaskBroadcast("cam0", 1, 1, (4, 5), [ObjectMask(1, "a", (1, 2, 3), mask, 0.0)], "spectral")
    parts = _bytes(broadcast.to_parts())
    header = msgpack.unpackb(parts[0])
    header["size"] = [5, 5]
    with pytest.raises(ProtocolError, match="add up to 20 pixels, expected 5x5=25"):
        MaskBroadcast.from_parts([msgpack.packb(header), *parts[1:]])


@hsettings(max_examples=200, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
def test_rle_round_trip(mask: np.ndarray) -> None:
    counts = rle_encode(mask)
    assert counts.dtype == np.uint32 and int(counts.sum()) == mask.size
    assert np.all(counts[1:] > 0)  # only the first run (zeros) may be empty
    np.testing.assert_array_equal(rle_decode(counts, mask.shape), mask)


@given(st.integers(1, 30), st.integers(1, 30))
def test_rle_of_full_and_empty_masks(h: int, w: int) -> None:
    assert rle_encode(np.zeros((h, w), bool)).tolist() == [h * w]
    assert rle_encode(np.ones((h, w), bool)).tolist() == [0, h * w]
