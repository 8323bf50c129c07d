"""Same-host frame path: cubes go into a ring of shared-memory slots and only a small
descriptor travels over the socket (a 100-band 480 x 640 float32 cube is 117 MiB; pushing
that through a socket costs copies and tens of milliseconds).

Segment layout (little-endian): a 64-byte segment header (magic ``SAMSARNG``, u32 version,
u32 slot count, u64 slot data size), then ``slots`` slots of a 64-byte slot header and the
slot's data. A slot header starts with a u64 sequence number: the writer sets it to 0 while
it copies a cube in and to the frame's sequence (>= 1) when done; a reader checks the number
before and after it uses the data, so a slot overwritten meanwhile is detected, never read torn.

Reader lease: a reader holds an open-file-description read lock (``F_OFD_SETLK``) on the first
byte of the slot it is working on (at most one slot per ring), and the writer takes a write lock
on that byte while it copies, skipping a slot it cannot lock. A worker slower than the camera
therefore keeps its frame; the kernel drops a dead reader's locks, and a ring of >= 3 slots
always leaves the writer a free slot.

The segment is sized up front but not touched: its pages are allocated the first time a slot
is written (in one ``MADV_POPULATE_WRITE`` call where the kernel has it), so memory follows the
slots actually used, not ``slots`` x the frame size from the start.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
import secrets
import stat
import struct
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ..errors import ProtocolError, TransportError
from ..protocol import fields as f
from ..protocol.codec import INT64_MAX
from ..protocol.messages import CUBE_DTYPES

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux
MAGIC = b"SAMSARNG"
LAYOUT_VERSION = 1
MAX_SLOTS = 256
MAX_RINGS = 64  # segments one reader keeps mapped (one per camera; a restarted camera replaces its own)
_SEGMENT = struct.Struct("<8sIIQ")  # magic, version, slots, slot_bytes
_SEGMENT_HEADER = 64  # bytes before slot 0; keeps every slot 64-byte aligned
_HEADER = 64  # bytes before each slot's data
_WRITING = 0
_CUBE_DTYPES = tuple(d.str for d in CUBE_DTYPES)
# Names the writer makes: samsa-<stream id>-<pid>-<6 hex>; nothing else is ever opened.
_NAME = re.compile(r"^samsa-[A-Za-z0-9_.-]{1,64}-[0-9]{1,10}-[0-9a-f]{6}$")
# Linux: MADV_POPULATE_READ / MADV_POPULATE_WRITE (5.14+); older kernels answer EINVAL and pages fault as before.
_POPULATE_READ, _POPULATE_WRITE = 22, 23
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid)


class SlotLapped(ProtocolError):
    """The slot was reused (or is being rewritten) before this reader took its frame: a drop, not a bad message."""


def segment_bytes(slots: int, slot_bytes: int) -> int:
    return _SEGMENT_HEADER + slots * (slot_bytes + _HEADER)


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
        """Byte offset of the slot's header (its sequence number); the data follows ``_HEADER`` bytes later."""
        return _SEGMENT_HEADER + self.slot * (self.slot_bytes + _HEADER)

    @property
    def nbytes(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count * np.dtype(self.dtype).itemsize

    def to_header(self) -> dict[str, Any]:
        return {"name": self.name, "slot": self.slot, "slot_bytes": self.slot_bytes, "seq": self.seq,
                "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_header(cls, data: Any) -> ShmRef:
        """Validate a ``cube_ref`` map field by field; ProtocolError (only) naming what is wrong."""
        what = "frame: cube_ref"
        if not isinstance(data, dict):
            raise ProtocolError(f"{what} must be a map, got {data!r:.80}")
        name = f.text(data, "name", what, max_len=96)
        if not _NAME.match(name):
            raise ProtocolError(f"{what}: segment name {name!r:.100} is not one ingest makes "
                                "(samsa-<stream id>-<pid>-<6 hex digits>)")
        slot = f.integer(data, "slot", what, hi=MAX_SLOTS - 1)
        slot_bytes = f.integer(data, "slot_bytes", what, lo=_HEADER)
        if slot_bytes % 64:
            raise ProtocolError(f"{what}: 'slot_bytes' must be a multiple of 64, got {slot_bytes}")
        if segment_bytes(slot + 1, slot_bytes) > INT64_MAX:
            raise ProtocolError(f"{what}: slot {slot} of {slot_bytes} bytes lies beyond any segment")
        seq = f.integer(data, "seq", what, lo=1)
        dtype = f.text(data, "dtype", what, max_len=8)
        if dtype not in _CUBE_DTYPES:
            raise ProtocolError(f"{what}: 'dtype' must be one of {', '.join(_CUBE_DTYPES)}, got {dtype!r}")
        shape = f.items(data, "shape", what, max_len=3)
        if len(shape) != 3 or any(type(n) is not int or not 0 < n <= INT64_MAX for n in shape):
            raise ProtocolError(f"{what}: 'shape' must be 3 positive integers [H, W, B], got {shape!r:.80}")
        ref = cls(name, slot, slot_bytes, seq, dtype, tuple(shape))
        if ref.nbytes > slot_bytes:
            raise ProtocolError(f"{what}: a {dtype} {list(shape)} cube ({ref.nbytes} bytes) does not fit a slot "
                                f"of {slot_bytes} bytes")
        return ref


def _seq_view(buf: Any, offset: int) -> np.ndarray:
    return np.frombuffer(buf, dtype="<u8", count=1, offset=offset)


def _lock(fd: int, kind: int, offset: int) -> bool:
    """Set (F_RDLCK, F_WRLCK) or clear (F_UNLCK) this open file's lock on byte ``offset``; False if another holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _populate(ring: mmap.mmap, advice: int, start: int, length: int) -> None:
    """Fault ``[start, start + length)`` in with one call, where the kernel can; otherwise pages fault on use."""
    page = mmap.PAGESIZE
    aligned = start - start % page
    try:
        ring.madvise(advice, aligned, min(len(ring), start + length) - aligned)
    except (OSError, ValueError):
        pass


class ShmWriter:
    """The ingest side: owns the ring, writes each cube into the next slot no reader holds."""

    def __init__(self, stream_id: str, slots: int = 4) -> None:
        if not 3 <= slots <= MAX_SLOTS:
            raise TransportError(f"a shared-memory ring needs 3 to {MAX_SLOTS} slots, got {slots}")
        self.stream_id = f.check_stream_id(stream_id)
        self.slots = slots
        self.lease_overrides = 0  # frames written into a slot a reader held, because every slot was held
        self._shm: shared_memory.SharedMemory | None = None
        self._name = ""
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._slot_bytes = 0
        self._next = 0
        self._seq = 0
        self._written: set[int] = set()

    def _ensure(self, nbytes: int) -> mmap.mmap:
        if self._map is None or nbytes > self._slot_bytes:
            self.close()  # a bigger camera frame: a new, larger ring (readers follow the new name)
            self._slot_bytes = max(64, -(-nbytes // 64) * 64)
            name = f"samsa-{self.stream_id}-{os.getpid()}-{secrets.token_hex(3)}"
            size = segment_bytes(self.slots, self._slot_bytes)
            # SharedMemory creates the segment (0600, this user) and registers it, so a killed ingest's
            # ring is still unlinked; the mapping used is our own, on a descriptor kept for the locks.
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            self._shm.close()
            self._name = name
            self._fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            self._map = mmap.mmap(self._fd, size)
            _SEGMENT.pack_into(self._map, 0, MAGIC, LAYOUT_VERSION, self.slots, self._slot_bytes)
            self._next = 0
            self._written.clear()
        return self._map

    def _claim(self) -> tuple[int, bool]:
        """The next slot in turn that no reader holds, write-locked; (slot, locked)."""
        for k in range(self.slots):
            slot = (self._next + k) % self.slots
            if _lock(self._fd, fcntl.F_WRLCK, segment_bytes(slot, self._slot_bytes)):
                self._next = (slot + 1) % self.slots
                return slot, True
        slot = self._next  # every slot held (more readers than slots - 1): overwrite; readers see the new seq
        self._next = (slot + 1) % self.slots
        self.lease_overrides += 1
        return slot, False

    def put(self, cube: np.ndarray) -> ShmRef:
        cube = np.ascontiguousarray(cube)
        if cube.dtype.byteorder == ">":
            cube = cube.astype(cube.dtype.newbyteorder("<"))
        ring = self._ensure(cube.nbytes)
        slot, locked = self._claim()
        self._seq += 1
        ref = ShmRef(self._name, slot, self._slot_bytes, self._seq, cube.dtype.str, cube.shape)
        try:
            if slot not in self._written:
                _populate(ring, _POPULATE_WRITE, ref.offset, _HEADER + self._slot_bytes)
                self._written.add(slot)
            seq = _seq_view(ring, ref.offset)
            seq[0] = _WRITING
            np.frombuffer(ring, dtype=cube.dtype, count=cube.size, offset=ref.offset + _HEADER)[:] = cube.ravel()
            seq[0] = ref.seq
            del seq
        finally:
            if locked:
                _lock(self._fd, fcntl.F_UNLCK, ref.offset)
        return ref

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._shm is not None:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self._shm = None


@dataclass
class _Ring:
    fd: int
    map: mmap.mmap
    slots: int
    slot_bytes: int
    populated: set[int]
    held: ShmRef | None = None


class ShmReader:
    """The worker side: maps rings read-only by name on first use and hands out views of their slots.

    Opens only names ingest makes, under /dev/shm, without following symlinks, and only regular
    files of this user (or root) whose segment header matches the reference. Maps the file
    directly rather than through SharedMemory, so attaching never makes this process an owner
    that would unlink the segment at exit.
    """

    def __init__(self) -> None:
        self._rings: dict[str, _Ring] = {}

    def _open(self, ref: ShmRef) -> _Ring:
        if not _NAME.match(ref.name):
            raise ProtocolError(f"shared-memory segment name {ref.name!r:.100} is not one ingest makes")
        path = os.path.join(SHM_DIR, ref.name)
        try:
            # O_NONBLOCK: a FIFO planted under that name must not hang the open.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise ProtocolError(f"shared-memory segment {ref.name!r} cannot be opened: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ProtocolError(f"shared-memory segment {ref.name!r} is not a regular file")
            if info.st_uid not in (os.getuid(), 0):
                raise ProtocolError(f"shared-memory segment {ref.name!r} belongs to uid {info.st_uid}, "
                                    f"not to this user ({os.getuid()})")
            if info.st_size < _SEGMENT_HEADER:
                raise ProtocolError(f"shared-memory segment {ref.name!r} is {info.st_size} bytes: no segment header")
            ring = mmap.mmap(fd, info.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            magic, version, slots, slot_bytes = _SEGMENT.unpack_from(ring, 0)
            if (magic != MAGIC or version != LAYOUT_VERSION or not 1 <= slots <= MAX_SLOTS
                    or info.st_size != segment_bytes(slots, slot_bytes)):
                ring.close()
                raise ProtocolError(f"shared-memory segment {ref.name!r} is not a samsa ring (layout "
                                    f"{LAYOUT_VERSION}) of its own size")
        except ProtocolError:
            os.close(fd)
            raise
        except (OSError, ValueError) as exc:
            os.close(fd)
            raise ProtocolError(f"shared-memory segment {ref.name!r} cannot be mapped: {exc}") from None
        return _Ring(fd, ring, slots, slot_bytes, set())

    def _ring(self, ref: ShmRef) -> _Ring:
        ring = self._rings.get(ref.name)
        if ring is None:
            prefix = ref.name.rsplit("-", 2)[0]
            stale = [n for n in self._rings if n.rsplit("-", 2)[0] == prefix]
            if len(self._rings) - len(stale) >= MAX_RINGS:
                raise ProtocolError(f"shared-memory segment {ref.name!r}: {MAX_RINGS} rings are mapped already")
            ring = self._open(ref)
            for old in stale:
                self._close(self._rings.pop(old))  # that camera restarted or resized: its old ring is gone
            self._rings[ref.name] = ring
        return ring

    def view(self, ref: ShmRef) -> np.ndarray:
        """Read-only view of the referenced cube; ProtocolError if it does not fit, SlotLapped if overwritten."""
        ring = self._ring(ref)
        if ref.slot >= ring.slots or ref.slot_bytes != ring.slot_bytes or ref.nbytes > ring.slot_bytes:
            raise ProtocolError(f"shared-memory reference (slot {ref.slot} of {ref.slot_bytes} bytes, a {ref.dtype} "
                                f"{list(ref.shape)} cube) does not fit ring {ref.name!r} of {ring.slots} slots of "
                                f"{ring.slot_bytes} bytes")
        if not self.valid(ref):
            raise SlotLapped(f"frame {ref.seq} in shared-memory slot {ref.slot} was overwritten before it was read")
        if ref.slot not in ring.populated:
            _populate(ring.map, _POPULATE_READ, ref.offset, _HEADER + ring.slot_bytes)
            ring.populated.add(ref.slot)
        count = ref.nbytes // np.dtype(ref.dtype).itemsize
        return np.frombuffer(ring.map, dtype=ref.dtype, count=count, offset=ref.offset + _HEADER).reshape(ref.shape)

    def valid(self, ref: ShmRef) -> bool:
        """Whether the slot still holds frame ``ref.seq``: check again after using a view."""
        ring = self._rings.get(ref.name)
        return (ring is not None and ref.slot < ring.slots and ref.slot_bytes == ring.slot_bytes
                and int(_seq_view(ring.map, ref.offset)[0]) == ref.seq)

    def hold(self, ref: ShmRef) -> None:
        """Lease ``ref``'s slot (releasing the slot held before in that ring), so the writer leaves it alone.

        Raises SlotLapped when the slot is being rewritten or no longer holds the frame."""
        ring = self._rings.get(ref.name)
        lapped = SlotLapped(f"frame {ref.seq} in shared-memory slot {ref.slot} was overwritten before it was read")
        if ring is None:
            raise lapped
        held = ring.held
        if held is not None and held.slot == ref.slot:  # same slot (the writer overrode the lease): keep the lock
            if not self.valid(ref):
                raise lapped
            ring.held = ref
            return
        offset = segment_bytes(ref.slot, ring.slot_bytes)
        if not _lock(ring.fd, fcntl.F_RDLCK, offset):
            raise lapped  # the writer is copying a newer frame into it right now
        if not self.valid(ref):
            _lock(ring.fd, fcntl.F_UNLCK, offset)
            raise lapped
        if held is not None:
            _lock(ring.fd, fcntl.F_UNLCK, segment_bytes(held.slot, ring.slot_bytes))
        ring.held = ref

    @staticmethod
    def _close(ring: _Ring) -> None:
        os.close(ring.fd)  # drops this reader's leases
        try:
            ring.map.close()
        except BufferError:  # a frame still holds a view; the mapping goes when that frame does
            pass

    def close(self) -> None:
        for ring in self._rings.values():
            self._close(ring)
        self._rings.clear()
