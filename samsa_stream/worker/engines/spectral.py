"""The spectral engine: spectral-angle similarity to the clicked spectra, thresholded, and the
connected regions that carry the object from frame to frame. Needs no model weights."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...protocol import CubeFrame
from ...settings import SpectralEngineSettings
from ...spectral.angles import PixelSpectra, angle_to_similarity, similarity_map
from ..prompts import Click, TrackedObject
from .base import Engine, FrameContext, ObjectMemory, Segmentation


@dataclass
class SpectralContext(FrameContext):
    spectra: PixelSpectra  # the frame's spectra and norms, shared by every object


def click_points(clicks: list[Click], frame_id: int, window: int, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, col) of the clicks made within ``window`` frames of ``frame_id`` that fall inside ``shape``."""
    h, w = shape
    points = []
    for c in clicks:
        row, col = int(round(c.y)), int(round(c.x))
        if abs(frame_id - c.frame_id) <= window and 0 <= row < h and 0 <= col < w:
            points.append((row, col))
    return points


def select_regions(candidate: np.ndarray, keep_at: list[tuple[int, int]], anchor: np.ndarray | None,
                   reject_at: list[tuple[int, int]], min_area: int) -> np.ndarray:
    """The connected regions of ``candidate`` that touch a keep point or the anchor mask and hold no
    reject point. With neither keep points nor an anchor (e.g. prompts restored after a restart),
    the largest region. A region that lost touch with its anchor is not guessed at: showing
    nothing is safer in theatre than showing the wrong tissue."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(candidate.shape, dtype=bool)
    keep = np.zeros(count, dtype=bool)
    for row, col in keep_at:
        keep[regions[row, col]] = True
    if anchor is not None and anchor.any():
        keep[np.unique(regions[anchor])] = True
    for row, col in reject_at:
        if (row, col) not in keep_at:
            keep[regions[row, col]] = False
    keep[0] = False
    keep &= stats[:, cv2.CC_STAT_AREA] >= min_area
    if not keep_at and (anchor is None or not anchor.any()):
        areas = stats[1:, cv2.CC_STAT_AREA]
        if areas.max() >= min_area:
            keep[1 + int(np.argmax(areas))] = True
    return keep[regions]


class SpectralEngine(Engine[SpectralContext]):
    """Carries nothing between frames beyond ``ObjectMemory.last_mask`` (the regions it follows)."""

    name = "spectral"

    def __init__(self, settings: SpectralEngineSettings, click_window: int = 4) -> None:
        self.settings = settings
        self.click_window = click_window
        self._last: dict[str, SpectralContext] = {}  # per stream: the newest prepared frame

    def prepare(self, frame: CubeFrame) -> SpectralContext:
        """The frame's spectra and norms; a prompt change on the same frame reuses them."""
        cached = self._last.get(frame.stream_id)
        if cached is None or cached.frame is not frame:
            cached = self._last[frame.stream_id] = SpectralContext(frame=frame, spectra=PixelSpectra.of(frame.cube))
        return cached

    def forget(self, stream_id: str) -> None:
        self._last.pop(stream_id, None)

    def similarity(self, ctx: SpectralContext, obj: TrackedObject) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(similarity, angle to the nearest positive, angle to the nearest negative or None) on this frame."""
        frame = ctx.frame
        pos = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.positives])
        theta_pos = ctx.spectra.angles(pos)
        theta_neg = None
        if obj.negatives:
            neg = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.negatives])
            theta_neg = ctx.spectra.angles(neg)
        sim = similarity_map(theta_pos, theta_neg)
        return sim, theta_pos.min(axis=2), None if theta_neg is None else theta_neg.min(axis=2)

    def segment(self, ctx: SpectralContext, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        frame = ctx.frame
        sim, near_pos, near_neg = self.similarity(ctx, obj)
        candidate = near_pos <= self.settings.threshold_rad
        if near_neg is not None:
            candidate &= near_pos < near_neg
        shape = candidate.shape
        anchor = memory.last_mask if memory.last_mask is not None and memory.last_mask.shape == shape else None
        mask = select_regions(candidate,
                              click_points(obj.positives, frame.frame_id, self.click_window, shape), anchor,
                              click_points(obj.negatives, frame.frame_id, self.click_window, shape),
                              self.settings.min_area_px)
        if mask.any():
            memory.last_mask = mask
        score = float(sim[mask].mean()) if mask.any() else 0.0
        # Logit-like map: positive inside the angle threshold, scaled by the distance to it.
        at_threshold = angle_to_similarity(np.asarray(self.settings.threshold_rad, np.float32))
        logits = (angle_to_similarity(near_pos) - at_threshold) * 20.0
        return Segmentation(mask=mask, score=score, similarity=sim, logits=logits.astype(np.float32))
