"""What a session recording holds: its channels, their schemas and how a message is stored (docs/recording.md).

A recording is one MCAP file (or a numbered series when it rolls over). Channels are named
``/<stream>/<kind>``; each kind has one schema, written once per file:

- ``frame``: schema ``samsa.frame``, ``msgpack``: the wire ``frame`` message (cube as float32 or
  float16, pseudo-RGB, wavelengths, frame metadata);
- ``masks``: ``samsa.masks``, ``msgpack``: the wire ``masks`` message (every object's mask as run
  lengths, label, colour, score, presence);
- ``prompt``: ``samsa.prompt_event``, ``msgpack``: the wire ``prompt_event`` message (a prompt the
  worker handled and its outcome);
- ``stream``: ``samsa.stream``, ``msgpack``: the wire ``stream`` message (size, wavelengths, engine,
  notices, legend, stale or live);
- ``overlay``: ``foxglove.CompressedImage``, ``json``: the overlay JPEG, viewable in Foxglove as is;

plus one channel ``/recorder/stats`` (schema ``samsa.recorder_stats``, ``json``): the recorder's
counters (what it recorded and what it missed), written every few seconds and at the end.

A ``msgpack`` message is the wire message itself: a msgpack array of the message's parts
(``[header, array bytes...]``, docs/protocol.md), so the project's own decoders (``from_parts``)
read it back with every check they make on the wire. Its schema is a JSON Schema of that array.

Times: a message's publish time is the frame's capture time (``capture_ns``; a prompt event's
``handled_ns``), its log time when the recorder received it, made strictly increasing so the
file's log-time order is the order the recorder saw the messages in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import ProtocolError
from ..protocol import CubeFrame, MaskBroadcast, OverlayImage, PromptEvent, StreamInfo, check_stream_id

PROFILE = ""  # no ROS profile
LIBRARY = "samsa-stream"
FORMAT_VERSION = 1  # in the file's metadata record "samsa-stream" (key "format_version")
METADATA_NAME = "samsa-stream"
STATS_TOPIC = "/recorder/stats"

_WIRE_ARRAY = {"type": "array", "minItems": 1, "items": [{"type": "string", "contentEncoding": "binary",
                                                          "description": "msgpack header map"}],
               "additionalItems": {"type": "string", "contentEncoding": "binary", "description": "raw array bytes"}}


@dataclass(frozen=True)
class Kind:
    """One kind of recorded message: its schema and how it is encoded."""

    name: str
    schema_name: str
    message_encoding: str  # "msgpack" | "json"
    schema: dict[str, Any]

    def schema_bytes(self) -> bytes:
        return json.dumps(self.schema, sort_keys=True).encode()


def _wire_schema(message_type: str, section: str) -> dict[str, Any]:
    return {"title": f"samsa-stream '{message_type}' message", "description": (
        f"the wire message of docs/protocol.md {section} as a msgpack array of its parts: the msgpack "
        f"header (type '{message_type}'), then the bytes of each array it lists"), **_WIRE_ARRAY}


KINDS: dict[str, Kind] = {
    "frame": Kind("frame", "samsa.frame", "msgpack", _wire_schema("frame", "3.1")),
    "masks": Kind("masks", "samsa.masks", "msgpack", _wire_schema("masks", "3.4")),
    "prompt": Kind("prompt", "samsa.prompt_event", "msgpack", _wire_schema("prompt_event", "3.8")),
    "stream": Kind("stream", "samsa.stream", "msgpack", _wire_schema("stream", "3.7")),
    "overlay": Kind("overlay", "foxglove.CompressedImage", "json", {
        "title": "foxglove.CompressedImage", "type": "object",
        "properties": {
            "timestamp": {"type": "object", "properties": {"sec": {"type": "integer", "minimum": 0},
                                                           "nsec": {"type": "integer", "minimum": 0}}},
            "frame_id": {"type": "string", "description": "the stream and frame: '<stream>/<frame id>'"},
            "data": {"type": "string", "contentEncoding": "base64"},
            "format": {"type": "string", "description": "jpeg or png"}}}),
}
STATS_KIND = Kind("stats", "samsa.recorder_stats", "json", {
    "title": "samsa-stream recorder counters", "type": "object",
    "properties": {"counters": {"type": "object", "additionalProperties": {"type": "integer"}},
                   "written_ns": {"type": "integer"}}})


def topic_of(kind: str, stream_id: str) -> str:
    """The channel topic of ``kind`` on ``stream_id``: ``/<stream>/<kind>``."""
    if kind not in KINDS:
        raise ValueError(f"no recorded kind {kind!r} (kinds: {', '.join(KINDS)})")
    return f"/{check_stream_id(stream_id)}/{kind}"


def parse_topic(topic: str) -> tuple[str, str]:
    """(stream, kind) of a channel topic; ProtocolError for anything else (the stats channel included)."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] or parts[2] not in KINDS:
        raise ProtocolError(f"channel {topic[:80]!r} is not /<stream>/<kind> with a recorded kind")
    return check_stream_id(parts[1], f"channel {topic[:80]!r}"), parts[2]


def wire_data(parts: list[Any]) -> bytes:
    """A wire message's parts as one recorded message (a msgpack array of bytes)."""
    # msgpack packs a byte view as bin without a copy of its own: one copy of a cube, into the record.
    return msgpack.packb([p if isinstance(p, bytes) else memoryview(p).cast("B") for p in parts], use_bin_type=True)


def wire_parts(data: bytes) -> list[bytes]:
    """The wire parts of a recorded ``msgpack`` message; ProtocolError when it is not one."""
    try:
        parts = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # any corrupt record: the reader counts it
        raise ProtocolError(f"recorded message is not msgpack: {type(exc).__name__}") from None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, bytes) for p in parts):
        raise ProtocolError("recorded message is not an array of byte strings")
    return parts


DECODERS: dict[str, Callable[[list[Any]], Any]] = {
    "frame": CubeFrame.from_parts, "masks": MaskBroadcast.from_parts, "prompt": PromptEvent.from_parts,
    "stream": StreamInfo.from_parts,
}


def decode(kind: str, data: bytes) -> Any:
    """A recorded message as the project's message object (CubeFrame, MaskBroadcast, PromptEvent,
    StreamInfo; for ``overlay`` the decoded JSON map with ``data`` as bytes). ProtocolError when
    it does not hold up."""
    if kind == "overlay":
        try:
            image = json.loads(data)
            image["data"] = base64.b64decode(image["data"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"recorded overlay is not a CompressedImage: {type(exc).__name__}") from None
        return image
    if kind not in DECODERS:
        raise ProtocolError(f"no recorded kind {kind!r}")
    return DECODERS[kind](wire_parts(data))


def overlay_data(overlay: OverlayImage) -> bytes:
    """An overlay message as a foxglove.CompressedImage JSON message."""
    data = overlay.data if isinstance(overlay.data, bytes) else bytes(overlay.data)
    return json.dumps({"timestamp": {"sec": overlay.capture_ns // 10**9, "nsec": overlay.capture_ns % 10**9},
                       "frame_id": f"{overlay.stream_id}/{overlay.frame_id}", "format": overlay.encoding,
                       "data": base64.b64encode(data).decode()}).encode()


__all__ = ["DECODERS", "FORMAT_VERSION", "KINDS", "LIBRARY", "METADATA_NAME", "PROFILE", "STATS_KIND", "STATS_TOPIC",
           "Kind", "decode", "overlay_data", "parse_topic", "topic_of", "wire_data", "wire_parts"]
