"""Overlay rendering: pseudo-RGB with each object's mask blended in its colour and outlined."""

from __future__ import annotations

import cv2
import numpy as np

from ..protocol import ObjectMask


def render_overlay(rgb: np.ndarray, objects: list[ObjectMask], alpha: float = 0.45) -> np.ndarray:
    """uint8 (H, W, 3) RGB image: masks filled at ``alpha`` over ``rgb`` with a solid outline."""
    out = rgb.copy()
    for obj in objects:
        if not obj.mask.any():
            continue
        colour = np.asarray(obj.colour, dtype=np.float32)
        region = out[obj.mask].astype(np.float32)
        out[obj.mask] = np.round(region * (1.0 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(obj.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in obj.colour), 1)
    return out


def encode_image(rgb: np.ndarray, encoding: str, jpeg_quality: int = 90) -> bytes:
    """RGB uint8 -> JPEG or PNG bytes."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    elif encoding == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"overlay encoding must be 'jpeg' or 'png', got {encoding!r}")
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {encoding}")
    return buf.tobytes()


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG or PNG bytes -> RGB uint8; ValueError if they are not an image."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("overlay bytes are not a decodable JPEG or PNG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
