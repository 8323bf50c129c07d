"""Wire protocol (docs/protocol.md): the envelope codec, typed messages, mask and image encodings."""

from ..errors import ProtocolError
from .codec import INT64_MAX, PROTOCOL_VERSION, decode, encode, now_ns, stamp
from .fields import STREAM_ID_PATTERN, check_stream_id
from .images import decode_image, encode_image
from .masks import rle_decode, rle_encode
from .messages import (
    PROMPT_OPS,
    PROMPTS,
    ClickPrompt,
    CubeFrame,
    FrameImage,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    PromptEvent,
    PromptReply,
    PromptRequest,
    RemovePrompt,
    ResetPrompt,
    SegmentationResult,
    StatePrompt,
    StatusPrompt,
    StreamInfo,
    StreamPrompt,
    UndoPrompt,
    check_cube,
    decode_prompt,
)


def topic(kind: str, stream_id: str) -> bytes:
    """Broadcast topic, e.g. ``b"mask/cam0/"``; the trailing slash keeps ``cam1`` from matching ``cam10``.

    Raises ProtocolError for a stream id that is not one (a ``/`` in it would match other streams' topics)."""
    return f"{kind}/{check_stream_id(stream_id)}/".encode()


__all__ = [
    "INT64_MAX", "PROMPTS", "PROMPT_OPS", "PROTOCOL_VERSION", "STREAM_ID_PATTERN", "ClickPrompt", "CubeFrame",
    "FrameImage", "MaskBroadcast", "StreamInfo", "ObjectMask", "OverlayImage", "PromptEvent", "PromptReply",
    "PromptRequest", "ProtocolError", "RemovePrompt", "ResetPrompt", "SegmentationResult", "StatePrompt",
    "StatusPrompt", "StreamPrompt", "UndoPrompt", "check_cube", "check_stream_id", "decode", "decode_image",
    "decode_prompt", "encode", "encode_image", "now_ns", "rle_decode", "rle_encode", "stamp", "topic",
]
