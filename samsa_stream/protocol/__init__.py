"""Wire protocol (docs/protocol.md): the envelope codec, mask encoding and typed messages."""

from .codec import PROTOCOL_VERSION, ProtocolError, decode, encode, now_ns, stamp
from .masks import rle_decode, rle_encode
from .messages import (
    CubeFrame,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    PromptReply,
    PromptRequest,
    SegmentationResult,
    check_cube,
)


def topic(kind: str, stream_id: str) -> bytes:
    """Broadcast topic, e.g. ``b"mask/cam0/"``; the trailing slash keeps ``cam1`` from matching ``cam10``."""
    return f"{kind}/{stream_id}/".encode()


__all__ = [
    "PROTOCOL_VERSION", "ProtocolError", "decode", "encode", "now_ns", "stamp", "rle_decode", "rle_encode",
    "CubeFrame", "MaskBroadcast", "ObjectMask", "OverlayImage", "PromptReply", "PromptRequest",
    "SegmentationResult", "check_cube", "topic",
]
