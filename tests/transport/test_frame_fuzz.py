"""Fuzzing the worker's frame receive path (``FrameReceiver.receive`` over a same-host link with shared
memory): byte flips and structure-aware field mutations of real frame messages, with and without a
``cube_ref``, are each either a frame or one counted rejection; nothing ever raises."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.protocol import topic
from samsa_stream.runtime import ProcessStats
from samsa_stream.transport import InProcessLink
from tests.conftest import phantom_frames


class Bench:
    """One link, one ring and the two real messages every example mutates."""

    def __init__(self) -> None:
        self.link = InProcessLink(capacity=4, shared_memory=True, slots=3)
        self.camera_stats = ProcessStats("camera")
        self.sender = self.link.sender(self.camera_stats)
        self.stats = ProcessStats("worker")
        self.receiver = self.link.receiver(self.stats)
        _, frames = phantom_frames(count=2, height=12, width=16, bands=8)
        self.plain = [bytes(p) for p in [topic("frame", "cam0"), *frames[0].to_parts()]]
        assert self.sender.send(frames[1])
        (message,) = self.link.mailbox.take_all()
        self.shared = [bytes(p) for p in message]  # its cube lies in the ring; the message has only the descriptor
        assert b"cube_ref" in self.shared[1]

    def feed(self, parts: list[bytes]) -> None:
        """One message through the receive path: a frame or exactly one counted rejection, never an exception."""
        before = dict(self.stats.counters)
        assert self.link.put(parts)
        frames = self.receiver.receive()
        counted = {k: self.stats.counters[k] - before.get(k, 0) for k in self.stats.counters}
        assert counted.get("frames_received") == 1
        assert counted.get("frame_decoder_faults", 0) == 0, list(self.stats.errors)[-1:]
        outcomes = len(frames) + counted.get("frames_rejected", 0) + counted.get("frames_lapped", 0)
        assert outcomes == 1, counted
        for frame in frames:
            assert np.all(np.isfinite(frame.cube)) and frame.cube.ndim == 3

    def close(self) -> None:
        self.receiver.close()
        self.sender.close()
        self.link.close()


@pytest.fixture(scope="module")
def bench() -> Any:
    b = Bench()
    yield b
    b.close()


def flip(parts: list[bytes], positions: list[tuple[int, int, int]]) -> list[bytes]:
    out = [bytearray(p) for p in parts]
    for part, offset, mask in positions:
        target = out[part % len(out)]
        if target:
            target[offset % len(target)] ^= mask or 1
    return [bytes(p) for p in out]


def test_seeded_byte_flips_of_real_frames(bench: Bench) -> None:
    """Thousands of single and multiple byte flips, as a noisy or hostile link would deliver them."""
    rng = np.random.default_rng(7)
    for base in (bench.plain, bench.shared):
        for _ in range(1500):
            count = int(rng.integers(1, 4))
            positions = []
            for _ in range(count):
                part = int(rng.integers(1, len(base)))  # the header mostly: flips in raw arrays change values only
                part = 1 if rng.random() < 0.8 else part
                positions.append((part, int(rng.integers(0, 1 << 30)), int(rng.integers(1, 256))))
            bench.feed(flip(base, positions))
    assert bench.stats.counters["frames_rejected"] > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 8), st.integers(0, 1 << 20), st.integers(1, 255)),
                               min_size=1, max_size=6), st.integers(-8, 8))
def test_random_byte_flips_and_truncations(bench: Bench, shared: bool, positions: list, cut: int) -> None:
    parts = flip(bench.shared if shared else bench.plain, positions)
    if cut:  # a part cut short or padded, or a part missing
        index = abs(cut) % len(parts)
        parts[index] = parts[index][:cut] if cut < 0 else parts[index] + b"\0" * cut
    bench.feed(parts)


_ints = st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]) | st.integers(-(2**63), 2**64 - 1)
_floats = st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 0.5])
_scalars = _ints | _floats | st.booleans() | st.none() | st.text(max_size=12) | st.binary(max_size=12)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _paths(header: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Every place a value lies in a frame header (as far as earlier mutations left it a header):
    top-level fields, array descriptors, cube_ref, hops."""
    paths: list[tuple[Any, ...]] = [(k,) for k in header]
    arrays = header.get("arrays")
    for i, spec in enumerate(arrays if isinstance(arrays, list) else []):
        if isinstance(spec, dict):
            paths += [("arrays", i, k) for k in spec]
    ref = header.get("cube_ref")
    paths += [("cube_ref", k) for k in (ref if isinstance(ref, dict) else {})]
    hops = header.get("hops")
    for i, hop in enumerate(hops if isinstance(hops, list) else []):
        if isinstance(hop, list):
            paths += [("hops", i, j) for j in range(len(hop))]
    return paths


def _set(node: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.data())
def test_structure_aware_field_mutations(bench: Bench, shared: bool, data: st.DataObject) -> None:
    base = bench.shared if shared else bench.plain
    header = msgpack.unpackb(base[1])
    header["hops"] = [["ingest_out", 1]]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(header)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        _set(header, path, data.draw(_values), delete=data.draw(st.booleans()))
    try:
        packed = msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return  # not representable on the wire
    bench.feed([base[0], packed, *base[2:]])
