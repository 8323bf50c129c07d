"""What one browser frame is on the wire (docs/web.md, "Frames"), and the per-client latest-value slot.

A frame is one binary WebSocket message::

    b"SWF1" | uint32 LE header length N | N bytes of JSON header | body

The body holds the encoded image (``header.image.offset``/``length``), then each object's mask run
lengths as uint32 LE (``objects[i].rle`` = [offset, count] in the body; docs/protocol.md section 4).
Pure functions: the broadcast thread composes a frame once and every client sends the same bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..display.subscriber import Update
from ..protocol import rle_encode

MAGIC = b"SWF1"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Frame:
    """One composed frame of one stream: ``version`` rises by one per new composition of the stream."""

    stream_id: str
    version: int
    header: dict[str, Any]
    data: bytes


def frame_header(stream_id: str, mask: Update | None, image: Update | None, info: Update | None, stale: bool,
                 now_ns: int) -> dict[str, Any]:
    """The JSON header of a frame from the newest mask, image and stream updates the server holds
    (body offsets are filled in by ``encode_frame``). Times are wall-clock milliseconds as floats, since
    a browser's numbers cannot hold nanoseconds since 1970 exactly."""
    masks = mask.masks if mask is not None else None
    stream = info.info if info is not None else None
    header: dict[str, Any] = {
        "type": "frame", "stream": stream_id, "stale": bool(stale), "server_ms": now_ns / 1e6,
        "frame_id": None, "seq": None, "publisher": None, "capture_ms": None, "size": None, "engine": None,
        "notices": [], "objects": [], "age_ms": None, "server_latency_ms": None, "missed": 0, "image": None,
        "publisher_stale": bool(stream.stale) if stream is not None else None,
        "publisher_age_ms": float(stream.age_ms) if stream is not None else None,
        "wavelengths_nm": list(stream.wavelengths_nm) if stream is not None else [],
    }
    if mask is not None and masks is not None:
        header.update(
            frame_id=masks.frame_id, seq=masks.seq, publisher=masks.publisher, capture_ms=masks.capture_ns / 1e6,
            size=list(masks.size), engine=masks.engine, notices=list(masks.notices), missed=mask.missed,
            age_ms=round((now_ns - mask.received_ns) / 1e6, 3),
            server_latency_ms=round((mask.received_ns - masks.capture_ns) / 1e6, 3),
            objects=[{"id": o.object_id, "label": o.label, "colour": list(o.colour), "score": round(float(o.score), 4),
                      "present": bool(o.present), "area": int(np.count_nonzero(o.mask))} for o in masks.objects])
    elif stream is not None:  # no mask yet (display joined while the stream is idle): the legend still shows
        header.update(frame_id=stream.frame_id, size=list(stream.size), engine=stream.engine,
                      notices=list(stream.notices), capture_ms=stream.capture_ns / 1e6,
                      objects=[{"id": o.get("id"), "label": o.get("label", ""), "colour": list(o.get("colour", [])),
                                "score": o.get("score", 0.0), "present": o.get("present", True),
                                "area": o.get("area", 0)} for o in stream.objects])
    if image is not None and image.overlay is not None:
        header["image"] = {"frame_id": image.frame_id, "seq": image.seq, "encoding": image.overlay.encoding,
                           "capture_ms": image.overlay.capture_ns / 1e6}
        if header["size"] is None and image.image is not None:
            header["size"] = list(image.image.shape[:2])
    return header


def encode_frame(header: dict[str, Any], image: bytes | np.ndarray | None, rles: list[np.ndarray]) -> bytes:
    """The binary message: magic, header length, JSON header (with body offsets added), image, run lengths.
    ``rles`` pairs with ``header["objects"]`` in order."""
    if len(rles) != len(header["objects"]):
        raise ValueError(f"{len(rles)} run-length arrays for {len(header['objects'])} objects")
    body: list[bytes] = []
    offset = 0
    if image is not None and header.get("image") is not None:
        data = bytes(image) if isinstance(image, bytes) else np.asarray(image, np.uint8).tobytes()
        header["image"] = {**header["image"], "offset": 0, "length": len(data)}
        body.append(data)
        offset = len(data)
    elif header.get("image") is not None:
        header["image"] = None
    objects = []
    for meta, counts in zip(header["objects"], rles, strict=True):
        raw = np.asarray(counts, dtype="<u4").tobytes()
        objects.append({**meta, "rle": [offset, len(raw) // 4]})
        body.append(raw)
        offset += len(raw)
    header["objects"] = objects
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *body])


def decode_frame(data: bytes) -> tuple[dict[str, Any], bytes | None, list[np.ndarray]]:
    """The inverse of ``encode_frame`` (for tests and Python clients): header, image bytes, run lengths.
    Raises ValueError for bytes that are not a frame."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ValueError("not a samsa-stream web frame (no SWF1 magic)")
    (length,) = _LENGTH.unpack_from(data, 4)
    if 8 + length > len(data):
        raise ValueError(f"frame header of {length} bytes runs past the message ({len(data)} bytes)")
    header = json.loads(data[8:8 + length])
    body = data[8 + length:]
    info = header.get("image")
    image = body[info["offset"]:info["offset"] + info["length"]] if info else None
    rles = [np.frombuffer(body[o["rle"][0]:o["rle"][0] + 4 * o["rle"][1]], dtype="<u4") for o in header["objects"]]
    return header, image, rles


def compose(stream_id: str, version: int, mask: Update | None, image: Update | None, info: Update | None,
            stale: bool, now_ns: int) -> Frame:
    """The frame of ``stream_id`` from the newest updates the server holds."""
    header = frame_header(stream_id, mask, image, info, stale, now_ns)
    header["version"] = version
    if mask is not None and mask.masks is not None:
        rles = [rle_encode(o.mask) for o in mask.masks.objects]
    elif header["size"] is not None:  # legend only (no mask yet): every object drawn empty
        h, w = header["size"]
        rles = [np.asarray([h * w], "<u4") for _ in header["objects"]]
    else:
        header["objects"], rles = [], []
    data = image.overlay.data if image is not None and image.overlay is not None else None
    return Frame(stream_id, version, header, encode_frame(header, data, rles))


@dataclass
class LatestSlot:
    """What one client has yet to be sent: only the newest frame is kept. A frame replaced before it
    was sent is counted in ``skipped`` (the client was slower than the stream, or above max_fps)."""

    sent_version: int = 0
    skipped: int = 0
    sent: int = 0
    pending: Frame | None = field(default=None, repr=False)

    def offer(self, frame: Frame) -> None:
        """A newer frame of the client's stream is available (older or equal versions are ignored)."""
        if frame.version <= max(self.sent_version, self.pending.version if self.pending else 0):
            return
        if self.pending is not None:
            self.skipped += 1
        self.pending = frame

    def take(self) -> Frame | None:
        """The frame to send now (None when nothing new), marked as sent."""
        frame, self.pending = self.pending, None
        if frame is not None:
            self.sent_version = frame.version
            self.sent += 1
        return frame

    def reset(self) -> None:
        """The client switched streams: versions of the new stream start afresh."""
        self.sent_version, self.pending = 0, None


__all__ = ["MAGIC", "Frame", "LatestSlot", "compose", "decode_frame", "encode_frame", "frame_header"]
