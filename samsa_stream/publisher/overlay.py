"""Overlay rendering: pseudo-RGB with each object's mask blended in its colour and outlined."""

from __future__ import annotations

import cv2
import numpy as np

from ..protocol import ObjectMask

STALE_COLOUR = (255, 176, 0)  # amber: not an object colour, not the red of notices


def render_overlay(rgb: np.ndarray, objects: list[ObjectMask], alpha: float = 0.45,
                   notices: list[str] | None = None, stale_s: float | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB image: masks filled at ``alpha`` over ``rgb`` with a solid outline and
    the object's label; ``notices`` (e.g. "masks are meaningless") in a red band along the top,
    so even a screen that only shows the overlay image shows them; objects judged out of view
    (``present`` false) named along the bottom, so a missing mask reads as "not in view", not as lost.
    ``stale_s`` (seconds since the newest result) greys the image out under a thick amber frame saying
    STALE, so an old mask never passes for a live one."""
    out = rgb.copy()
    scale = max(0.8, min(out.shape[:2]) / 480)  # text legible from a 120-pixel phantom to a 1080p frame
    away = [obj for obj in objects if not obj.present]
    for k, obj in enumerate(away):
        _text(out, f"{obj.label}: not in view", (2, out.shape[0] - 3 - k * int(16 * scale)), obj.colour, scale)
    for obj in objects:
        if not obj.mask.any():
            continue
        colour = np.asarray(obj.colour, dtype=np.float32)
        region = out[obj.mask].astype(np.float32)
        out[obj.mask] = np.round(region * (1.0 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(obj.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in obj.colour), 1)
        ys, xs = np.nonzero(obj.mask)
        _text(out, obj.label, (int(xs.min()), max(int(ys.min()) - 3, int(12 * scale))), obj.colour, scale)
    if stale_s is not None:
        draw_stale_marker(out, stale_s)
    band = int(16 * scale)
    lines = [line for notice in notices or [] for line in _wrap(notice, out.shape[1] - 4, 0.4 * scale)]
    room = max(2, out.shape[0] // (4 * band))  # about a quarter of the image; the full text is in the mask messages
    if len(lines) > room:
        lines = [*lines[:room - 1], lines[room - 1] + " ..."]
    for row, line in enumerate(lines):
        top = row * band
        # Translucent, so the tissue under a notice stays visible.
        out[top:top + band] = (out[top:top + band] * 0.35 + np.array([160.0, 0.0, 0.0]) * 0.65).astype(np.uint8)
        cv2.putText(out, line, (2, top + int(12 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def draw_stale_marker(image: np.ndarray, stale_s: float) -> None:
    """Mark ``image`` (RGB, in place) as not live: washed out, under an amber frame saying STALE."""
    scale = max(0.8, min(image.shape[:2]) / 480)
    grey = image.mean(axis=2, keepdims=True)
    image[:] = np.round(image * 0.3 + grey * 0.4).astype(np.uint8)  # darker and washed out: not live
    h, w = image.shape[:2]
    thick = max(3, int(6 * scale))
    cv2.rectangle(image, (0, 0), (w - 1, h - 1), STALE_COLOUR, thick)
    text = f"STALE: no new mask for {stale_s:.1f} s"
    size = 0.55 * scale
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 2)
    x, y = max(thick + 2, (w - tw) // 2), h // 2 + th // 2
    cv2.rectangle(image, (x - 4, y - th - 6), (x + tw + 4, y + 6), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, STALE_COLOUR, 2, cv2.LINE_AA)


def _wrap(text: str, width: int, size: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer word stands alone)."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0][0] <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def _text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    """``text`` in ``colour`` on a dark box, legible over any tissue."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale
    (w, h), base = cv2.getTextSize(text, font, size, 1)
    x, y = origin
    cv2.rectangle(image, (x - 1, y - h - 2), (x + w + 1, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), font, size, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
