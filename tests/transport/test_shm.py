"""Shared-memory frame slots: round trip, lapped readers, leases, lazy allocation, bad descriptors, planted files."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.errors import ProtocolError, TransportError
from samsa_stream.protocol import CubeFrame
from samsa_stream.transport import ShmReader, ShmRef, ShmWriter, SlotLapped, uses_shared_memory
from samsa_stream.transport.shm import SHM_DIR, segment_bytes
from tests.conftest import phantom_frames


@pytest.fixture
def ring() -> Iterator[tuple[ShmWriter, ShmReader]]:
    writer, reader = ShmWriter("test", slots=3), ShmReader()
    yield writer, reader
    reader.close()
    writer.close()


@pytest.fixture
def planted() -> Iterator[list[Path]]:
    """Paths a test plants under /dev/shm; removed afterwards whatever happens."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if path.is_symlink() or path.exists():
            path.unlink()


def plant_name() -> str:
    return f"samsa-planted-{os.getpid()}-{secrets.token_hex(3)}"


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
    with pytest.raises(SlotLapped, match="overwritten"):
        reader.view(refs[0])  # slot 0 now holds cube 3
    view = reader.view(refs[2])
    assert reader.valid(refs[2])
    for _ in range(3):
        writer.put(cubes[0])
    assert not reader.valid(refs[2]) and view[0, 0, 0] != 2.0  # a kept view must be re-checked after use


def test_a_held_slot_is_never_overwritten(ring) -> None:
    writer, reader = ring
    first = writer.put(np.full((4, 5, 6), 1.0, np.float32))
    reader.view(first)
    reader.hold(first)
    slots = {writer.put(np.full((4, 5, 6), float(k), np.float32)).slot for k in range(2, 30)}
    assert first.slot not in slots and len(slots) == 2  # the writer used the other two slots
    assert reader.valid(first) and reader.view(first)[0, 0, 0] == 1.0
    newer = writer.put(np.zeros((4, 5, 6), np.float32))
    reader.view(newer)
    reader.hold(newer)  # the lease moves on: the old slot is free again
    slots = {writer.put(np.zeros((4, 5, 6), np.float32)).slot for _ in range(6)}
    assert first.slot in slots and newer.slot not in slots
    assert writer.lease_overrides == 0


def test_a_lease_of_a_dead_reader_goes_with_it(ring) -> None:
    writer, _ = ring
    ref = writer.put(np.ones((4, 5, 6), np.float32))
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from samsa_stream.transport import ShmReader, ShmRef; import json\n"
         "r = ShmReader(); ref = ShmRef.from_header(json.loads(sys.argv[1])); r.view(ref); r.hold(ref)\n"
         "print('held', flush=True); sys.stdin.read()",
         __import__("json").dumps(ref.to_header())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert ref.slot not in {writer.put(np.ones((4, 5, 6), np.float32)).slot for _ in range(6)}
        child.kill()  # no clean-up: the kernel drops its locks
        child.wait(10)
        assert ref.slot in {writer.put(np.ones((4, 5, 6), np.float32)).slot for _ in range(3)}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_every_slot_held_is_overwritten_and_counted() -> None:
    writer = ShmWriter("test", slots=3)
    readers = [ShmReader() for _ in range(3)]
    try:
        for reader in readers:
            ref = writer.put(np.ones((2, 2, 2), np.float32))
            reader.view(ref)
            reader.hold(ref)
        writer.put(np.ones((2, 2, 2), np.float32))  # more readers than free slots: the camera is never blocked
        assert writer.lease_overrides == 1
    finally:
        for reader in readers:
            reader.close()
        writer.close()


def test_bigger_frame_gets_a_new_ring(ring) -> None:
    writer, reader = ring
    small = writer.put(np.ones((2, 2, 2), np.float32))
    big = writer.put(np.ones((8, 8, 8), np.float32))
    assert big.name != small.name and not Path(SHM_DIR, small.name).exists()
    assert reader.view(big).shape == (8, 8, 8)


def test_ring_memory_follows_the_slots_written() -> None:
    """The segment is not zeroed up front: memory is allocated as slots are first written."""
    writer = ShmWriter("test", slots=8)
    cube = np.ones((64, 64, 64), np.float32)  # 1 MiB per slot
    try:
        ref = writer.put(cube)
        path = Path(SHM_DIR, ref.name)
        assert path.stat().st_size == segment_bytes(8, ref.slot_bytes)
        assert path.stat().st_blocks * 512 < 2 * cube.nbytes  # one slot's worth, not eight
        for _ in range(7):
            writer.put(cube)
        assert path.stat().st_blocks * 512 >= 8 * cube.nbytes
    finally:
        writer.close()
    assert not path.exists()  # closing the writer removes the segment


def test_segment_is_private_to_this_user(ring) -> None:
    writer, _ = ring
    ref = writer.put(np.ones((2, 2, 2), np.float32))
    assert Path(SHM_DIR, ref.name).stat().st_mode & 0o077 == 0


GOOD = {"name": "samsa-cam0-123-abcdef", "slot": 1, "slot_bytes": 128, "seq": 5, "dtype": "<f4", "shape": [2, 2, 8]}


@pytest.mark.parametrize("field, value, words", [
    ("slot", "x", "must be an integer"),
    ("slot", [1], "must be an integer"),
    ("slot", {"a": 1}, "must be an integer"),
    ("slot", float("inf"), "must be an integer"),
    ("slot", True, "must be an integer"),
    ("slot", 256, "between 0 and 255"),
    ("slot", -1, "between 0 and 255"),
    ("slot_bytes", 2**70, "between"),
    ("slot_bytes", 2**63 - 64, "beyond any segment"),
    ("slot_bytes", 100, "multiple of 64"),
    ("slot_bytes", 64, "does not fit a slot"),
    ("seq", 0, "between 1 and"),
    ("seq", 2**64, "between 1 and"),
    ("dtype", "<f8", "must be one of"),
    ("dtype", "zz-not-a-dtype", "more than 8"),
    ("dtype", "<q8", "must be one of"),
    ("dtype", ["<f4"], "must be a string"),
    ("shape", [2, 2], "3 positive integers"),
    ("shape", [2, 0, 8], "3 positive integers"),
    ("shape", [2, -2, 8], "3 positive integers"),
    ("shape", [2, 2.0, 8], "3 positive integers"),
    ("shape", [2**62, 2**62, 8], "does not fit"),
    ("shape", "2,2,8", "must be a list"),
    ("name", "../../etc/passwd", "not one ingest makes"),
    ("name", "samsa-cam0-123-abcdef/../x", "not one ingest makes"),
    ("name", "samsa-cam0-123-ABCDEF", "not one ingest makes"),
    ("name", "psm_12345", "not one ingest makes"),
    ("name", {"a": "b"}, "must be a string"),
])
def test_bad_descriptor_fields_are_protocol_errors(field: str, value: object, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        ShmRef.from_header({**GOOD, field: value})


def test_descriptor_that_is_not_a_map_or_lacks_a_field() -> None:
    assert ShmRef.from_header(GOOD).shape == (2, 2, 8)
    for data in (None, [], "samsa", 7):
        with pytest.raises(ProtocolError, match="must be a map"):
            ShmRef.from_header(data)
    for field in GOOD:
        with pytest.raises(ProtocolError, match="missing"):
            ShmRef.from_header({k: v for k, v in GOOD.items() if k != field})


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                       | st.binary(max_size=8), lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), _values, max_size=6), st.dictionaries(
    st.sampled_from(sorted(GOOD)), _values, max_size=2))
def test_any_descriptor_is_valid_or_a_protocol_error(fields: dict, mutation: dict) -> None:
    for data in (fields, {**GOOD, **mutation}):
        try:
            ref = ShmRef.from_header(data)
        except ProtocolError:
            continue
        assert 0 <= ref.slot < 256 and ref.seq >= 1 and ref.nbytes <= ref.slot_bytes


def test_reader_refuses_what_it_cannot_or_must_not_map(ring, planted) -> None:
    writer, reader = ring
    ref = writer.put(np.ones((2, 3, 4), np.float32)).to_header()
    with pytest.raises(ProtocolError, match="cannot be opened"):
        reader.view(ShmRef.from_header({**ref, "name": "samsa-nonexistent-1-abcdef"}))
    with pytest.raises(ProtocolError, match="does not fit"):
        reader.view(ShmRef.from_header({**ref, "slot": 99}))
    with pytest.raises(ProtocolError, match="does not fit"):
        reader.view(ShmRef.from_header({**ref, "slot_bytes": ref["slot_bytes"] + 64}))
    # A planted regular file with a name ingest could have made, but not a ring.
    fake = Path(SHM_DIR, plant_name())
    planted.append(fake)
    fake.write_bytes(b"\0" * 4096)
    with pytest.raises(ProtocolError, match="not a samsa ring"):
        reader.view(ShmRef.from_header({**ref, "name": fake.name}))
    # A FIFO must neither hang the open nor be mapped.
    fifo = Path(SHM_DIR, plant_name())
    planted.append(fifo)
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ProtocolError, match="not a regular file"):
        reader.view(ShmRef.from_header({**ref, "name": fifo.name}))


def test_planted_symlink_is_not_followed(ring, planted, tmp_path: Path) -> None:
    """A symlink under /dev/shm named like a ring, pointing at another file: never opened."""
    writer, reader = ring
    ref = writer.put(np.ones((2, 3, 4), np.float32))
    secret = tmp_path / "secret"
    secret.write_bytes(Path(SHM_DIR, ref.name).read_bytes())  # even a file that looks exactly like a ring
    link = Path(SHM_DIR, plant_name())
    planted.append(link)
    link.symlink_to(secret)
    with pytest.raises(ProtocolError, match="cannot be opened"):
        reader.view(ShmRef.from_header({**ref.to_header(), "name": link.name}))
    assert link.name not in reader._rings


def test_ring_of_too_few_slots_is_refused() -> None:
    with pytest.raises(TransportError, match="3 to 256 slots"):
        ShmWriter("test", slots=2)


def test_receiver_without_shared_memory_gets_a_clear_error(ring) -> None:
    writer, _ = ring
    _, frames = phantom_frames(count=1)
    parts = frames[0].to_parts(writer.put(frames[0].cube).to_header())
    with pytest.raises(ProtocolError, match="shared memory"):
        CubeFrame.from_parts([bytes(p) for p in parts])


def test_shared_memory_only_on_same_host_endpoints() -> None:
    assert uses_shared_memory("auto", "ipc:///tmp/x")
    assert uses_shared_memory("on", "inproc://frames")
    assert not uses_shared_memory("auto", "tcp://127.0.0.1:5555")
    assert not uses_shared_memory("off", "ipc:///tmp/x")
    with pytest.raises(TransportError, match="same-host"):
        uses_shared_memory("on", "tcp://127.0.0.1:5555")
