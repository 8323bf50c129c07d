"""Malformed variants of wire messages, for resilience tests and the chaos command (benchmarks/chaos.py):
what a broken or hostile peer could send on any link."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgpack

# Odd values for a header field: wrong types, out of range, huge, and shared-memory references that lie.
ODD_VALUES: tuple[object, ...] = (
    None, -1, 2**64 - 1, 1e308, float("nan"), "", "x" * 5000, [], {}, [[1]],
    {"name": "/dev/shm/none", "slot": 3, "ring": "x", "generation": -1},
    {"ring": "samsa-0", "slot": 0, "seq": 2**63, "shape": [1, 1, 1]},
)


class Mangler:
    """``mangler(valid)``: one malformed message made from the valid ``valid`` parts (or from nothing):
    random bytes, a part cut short, flipped bytes, a header field set to an odd value, a part missing
    or one too many, empty parts, or a valid message of another type (``others``)."""

    def __init__(self, seed: int, others: Sequence[list[bytes]] = ()) -> None:
        self.rng = random.Random(seed)
        self.others = list(others) or [[msgpack.packb({"v": 1, "type": t})] for t in ("frame", "masks", "x")]

    def header_field(self, valid: list[bytes]) -> list[bytes]:
        header = msgpack.unpackb(valid[0])
        key = self.rng.choice([*header, "cube_ref"])
        header[key] = self.rng.choice(ODD_VALUES)
        return [msgpack.packb(header), *valid[1:]]

    def __call__(self, valid: list[bytes]) -> list[bytes]:
        r = self.rng
        kind = r.randrange(7)
        if kind == 0:
            return [r.randbytes(r.randrange(0, 100)) for _ in range(r.randrange(1, 5))]
        if kind == 1:
            i = r.randrange(len(valid))
            return [*valid[:i], valid[i][: r.randrange(max(1, len(valid[i])))], *valid[i + 1:]]
        if kind == 2:
            parts = [bytearray(p) for p in valid]
            for _ in range(r.randrange(1, 10)):
                part = parts[r.randrange(len(parts))]
                if part:
                    part[r.randrange(len(part))] = r.randrange(256)
            return [bytes(p) for p in parts]
        if kind == 3:
            return self.header_field(valid)
        if kind == 4:
            return valid[:-1] if len(valid) > 1 and r.random() < 0.5 else [*valid, r.randbytes(r.randrange(0, 9))]
        if kind == 5:
            return [b""] * r.randrange(1, 4)
        return r.choice(self.others)
