"""The overlay image codec: RGB arrays to and from the JPEG or PNG bytes an ``overlay`` message carries."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ProtocolError

IMAGE_ENCODINGS = ("jpeg", "png")


def encode_image(rgb: np.ndarray, encoding: str, jpeg_quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG or PNG bytes."""
    if encoding not in IMAGE_ENCODINGS:
        raise ProtocolError(f"overlay encoding must be 'jpeg' or 'png', got {encoding!r}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ProtocolError(f"could not encode a {rgb.shape} image as {encoding}")
    return bytes(buf.tobytes())


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG or PNG bytes -> RGB uint8 (H, W, 3); ProtocolError if they are not an image."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ProtocolError("overlay bytes are not a decodable JPEG or PNG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
