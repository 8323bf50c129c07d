"""Shared-memory frame slots: round trip, lapped readers, bad descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from samsa_stream.protocol import CubeFrame, ProtocolError
from samsa_stream.transport import ShmReader, ShmRef, ShmWriter, uses_shared_memory
from tests.conftest import phantom_frames


@pytest.fixture
def ring():
    writer, reader = ShmWriter("test", slots=3), ShmReader()
    yield writer, reader
    reader.close()
    writer.close()


def test_cube_round_trip_without_copy_on_the_socket(ring) -> None:
    writer, reader = ring
    _, frames = phantom_frames(count=1, bands=20)
    frame = frames[0]
    parts = frame.to_parts(writer.put(frame.cube).to_header())
    assert sum(len(memoryview(p).cast("B")) for p in parts) < frame.cube.nbytes / 4  # the cube is not in the message
    back = CubeFrame.from_parts([bytes(p) for p in parts], lambda ref: reader.view(ShmRef.from_header(ref)))
    np.testing.assert_array_equal(back.cube, frame.cube)
    assert not back.cube.flags.writeable


def test_lapped_slot_is_detected(ring) -> None:
    writer, reader = ring
    cubes = [np.full((4, 5, 6), float(i), np.float32) for i in range(5)]
    refs = [writer.put(c) for c in cubes]
    assert reader.view(refs[-1])[0, 0, 0] == 4.0
    with pytest.raises(ProtocolError, match="overwritten"):
        reader.view(refs[0])  # slot 0 now holds cube 3
    view = reader.view(refs[2])
    assert reader.valid(refs[2])
    writer.put(cubes[0])
    writer.put(cubes[0])
    writer.put(cubes[0])
    assert not reader.valid(refs[2]) and view[0, 0, 0] != 2.0  # a kept view must be re-checked after use


def test_bigger_frame_gets_a_new_ring(ring) -> None:
    writer, reader = ring
    small = writer.put(np.ones((2, 2, 2), np.float32))
    big = writer.put(np.ones((8, 8, 8), np.float32))
    assert big.name != small.name
    assert reader.view(big).shape == (8, 8, 8)


def test_bad_descriptors_are_rejected(ring) -> None:
    writer, reader = ring
    ref = writer.put(np.ones((2, 3, 4), np.float32)).to_header()
    with pytest.raises(ProtocolError, match="malformed"):
        ShmRef.from_header({**ref, "slot": "x"})
    with pytest.raises(ProtocolError, match="negative"):
        ShmRef.from_header({**ref, "seq": 0})
    with pytest.raises(ProtocolError, match="cannot be opened"):
        reader.view(ShmRef.from_header({**ref, "name": "samsa-nonexistent-1-abc"}))
    with pytest.raises(ProtocolError, match="not a plain name"):
        reader.view(ShmRef.from_header({**ref, "name": "../etc/passwd"}))
    with pytest.raises(ProtocolError, match="does not fit"):
        reader.view(ShmRef.from_header({**ref, "shape": [200, 300, 4]}))
    with pytest.raises(ProtocolError, match="does not fit"):
        reader.view(ShmRef.from_header({**ref, "slot": 99}))


def test_receiver_without_shared_memory_gets_a_clear_error(ring) -> None:
    writer, _ = ring
    _, frames = phantom_frames(count=1)
    parts = frames[0].to_parts(writer.put(frames[0].cube).to_header())
    with pytest.raises(ProtocolError, match="shared memory"):
        CubeFrame.from_parts([bytes(p) for p in parts])


def test_auto_mode_is_for_same_host_endpoints_only() -> None:
    assert uses_shared_memory("auto", "ipc:///tmp/x")
    assert not uses_shared_memory("auto", "tcp://127.0.0.1:5555")
    assert uses_shared_memory("on", "tcp://127.0.0.1:5555")
    assert not uses_shared_memory("off", "ipc:///tmp/x")
