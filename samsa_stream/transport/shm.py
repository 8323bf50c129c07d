"""Same-host frame path: cubes go into a ring of shared-memory slots and only a small
descriptor travels over the socket (a 100-band 480 x 640 float32 cube is 117 MiB; pushing
that through a socket costs copies and tens of milliseconds).

Each slot starts with an 8-byte little-endian sequence number. The writer sets it to 0
while it copies a cube in and to the frame's sequence (>= 1) when done; a reader checks
the number before and after it uses the data, so a slot overwritten meanwhile (the reader
fell a whole ring behind) is detected instead of being silently read torn.
"""

from __future__ import annotations

import mmap
import os
import secrets
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..protocol import ProtocolError

SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux
_HEADER = 64  # bytes before each slot's data; keeps the data 64-byte aligned
_WRITING = 0


@dataclass(frozen=True)
class ShmRef:
    """Where a cube lies: segment name, slot (and slot size), sequence number, dtype and shape."""

    name: str
    slot: int
    slot_bytes: int
    seq: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def offset(self) -> int:
        """Byte offset of the slot's sequence number; the data follows ``_HEADER`` bytes later."""
        return self.slot * (self.slot_bytes + _HEADER)

    def to_header(self) -> dict[str, Any]:
        return {"name": self.name, "slot": self.slot, "slot_bytes": self.slot_bytes, "seq": self.seq,
                "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_header(cls, data: Any) -> "ShmRef":
        try:
            ref = cls(str(data["name"]), int(data["slot"]), int(data["slot_bytes"]), int(data["seq"]),
                      str(data["dtype"]), tuple(int(n) for n in data["shape"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"shared-memory reference {data!r} is malformed: {exc}") from None
        if ref.slot < 0 or ref.seq < 1 or ref.slot_bytes < 0 or any(n < 0 for n in ref.shape):
            raise ProtocolError(f"shared-memory reference {data!r} has a negative slot, size or sequence")
        return ref


def _seq_view(buf: Any, offset: int) -> np.ndarray:
    return np.frombuffer(buf, dtype="<u8", count=1, offset=offset)


class ShmWriter:
    """The ingest side: owns the ring, writes each cube into the next slot."""

    def __init__(self, stream_id: str, slots: int = 4) -> None:
        self.stream_id = stream_id
        self.slots = slots
        self._shm: shared_memory.SharedMemory | None = None
        self._slot_bytes = 0
        self._next = 0
        self._seq = 0

    def _ensure(self, nbytes: int) -> shared_memory.SharedMemory:
        if self._shm is None or nbytes > self._slot_bytes:
            self.close()  # a bigger camera frame: a new, larger ring (readers follow the new name)
            self._slot_bytes = -(-nbytes // 64) * 64
            name = f"samsa-{self.stream_id}-{os.getpid()}-{secrets.token_hex(3)}"
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=self.slots * (self._slot_bytes + _HEADER))
            np.frombuffer(self._shm.buf, dtype=np.uint8)[:] = 0  # fault every page in now, not on a live frame
            self._next = 0
        return self._shm

    def put(self, cube: np.ndarray) -> ShmRef:
        cube = np.ascontiguousarray(cube)
        if cube.dtype.byteorder == ">":
            cube = cube.astype(cube.dtype.newbyteorder("<"))
        shm = self._ensure(cube.nbytes)
        slot = self._next
        self._next = (self._next + 1) % self.slots
        self._seq += 1
        ref = ShmRef(shm.name, slot, self._slot_bytes, self._seq, cube.dtype.str, cube.shape)
        seq = _seq_view(shm.buf, ref.offset)
        seq[0] = _WRITING
        np.frombuffer(shm.buf, dtype=cube.dtype, count=cube.size, offset=ref.offset + _HEADER)[:] = cube.ravel()
        seq[0] = ref.seq
        return ref

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None


class ShmReader:
    """The worker side: maps rings read-only by name on first use and hands out views of their slots.

    Maps the segment's file under /dev/shm directly rather than through SharedMemory, so
    attaching never registers this process as an owner that would unlink it at exit.
    """

    def __init__(self) -> None:
        self._rings: dict[str, mmap.mmap] = {}

    def _ring(self, ref: ShmRef) -> mmap.mmap:
        ring = self._rings.get(ref.name)
        if ring is None:
            if "/" in ref.name or ref.name.startswith("."):
                raise ProtocolError(f"shared-memory segment name {ref.name!r} is not a plain name")
            try:
                fd = os.open(os.path.join(SHM_DIR, ref.name), os.O_RDONLY)
                try:
                    # MAP_POPULATE maps every page now: no page faults while a live frame is read.
                    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                    ring = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ)
                finally:
                    os.close(fd)
            except (OSError, ValueError) as exc:
                raise ProtocolError(f"shared-memory segment {ref.name!r} cannot be opened: {exc}") from None
            prefix = ref.name.rsplit("-", 2)[0]
            for old in [n for n in self._rings if n.rsplit("-", 2)[0] == prefix]:
                self._close(self._rings.pop(old))  # that camera restarted or resized: its old ring is gone
            self._rings[ref.name] = ring
        return ring

    def view(self, ref: ShmRef) -> np.ndarray:
        """Read-only view of the referenced cube; ProtocolError if it is out of bounds or overwritten."""
        try:
            dtype = np.dtype(ref.dtype)
        except TypeError:
            raise ProtocolError(f"shared-memory cube dtype {ref.dtype!r} is not a dtype") from None
        count = int(np.prod(ref.shape, dtype=np.int64))
        shm = self._ring(ref)
        if count * dtype.itemsize > ref.slot_bytes or ref.offset + _HEADER + ref.slot_bytes > len(shm):
            raise ProtocolError(f"shared-memory slot {ref.slot} of {ref.name!r} does not fit a {ref.dtype} "
                                f"{ref.shape} cube within the segment's {len(shm)} bytes")
        if not self.valid(ref):
            raise ProtocolError(f"frame {ref.seq} in shared-memory slot {ref.slot} was overwritten before it was "
                                "read (the reader fell a whole ring behind)")
        return np.frombuffer(shm, dtype=dtype, count=count, offset=ref.offset + _HEADER).reshape(ref.shape)

    def valid(self, ref: ShmRef) -> bool:
        """Whether the slot still holds frame ``ref.seq``: check again after using a view."""
        ring = self._rings.get(ref.name)
        return ring is not None and int(_seq_view(ring, ref.offset)[0]) == ref.seq

    @staticmethod
    def _close(ring: mmap.mmap) -> None:
        try:
            ring.close()
        except BufferError:  # a frame still holds a view; the mapping goes when that frame does
            pass

    def close(self) -> None:
        for ring in self._rings.values():
            self._close(ring)
        self._rings.clear()
