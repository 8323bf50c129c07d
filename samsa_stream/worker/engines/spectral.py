"""The spectral engine: spectral-angle similarity to the clicked spectra, thresholded per pixel, and
the connected regions that carry the object from click to click and frame to frame. Needs no weights.

Per object and frame (DESIGN section 4):
- a pixel is a candidate when its angle to some positive reference is within that reference's
  threshold: ``worker.spectral.threshold_rad``, widened where the sensor noise alone puts a pixel
  of the reference's own material further away (``noise_factor``; noise estimated per frame);
- a negative click cuts the pixels spectrally nearer to it than to every positive reference, and
  within a region that also holds a positive click, the pixels nearer to it than to the positives;
- around the object's first positive click on or near this frame (the click that says what the
  object is; later ones are corrections, often at its border), a ring of pixels mostly unlike the
  clicked spectrum (a small target on its background) gives an implicit negative reference from
  those of them still within the threshold: pixels spectrally nearer to those surroundings than to
  the object are not the object (a target close in angle to its background does not flood it);
- a clicked pixel always belongs to its object (a positive one in, a negative one out), and a
  region holding a click is kept however small;
- positives on two separate regions say the object has several parts: then every similar region
  is kept (not only the clicked ones), unless a negative click lies in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...protocol import CubeFrame
from ...settings import SpectralEngineSettings
from ...spectral.angles import HALF_PI, PixelSpectra, angle_to_similarity, sensor_noise, similarity_map
from ..prompts import Click, TrackedObject
from .base import Engine, EngineMemory, FrameContext, ObjectMemory, Segmentation

Point = tuple[int, int]  # (row, col)


@dataclass
class SpectralContext(FrameContext):
    spectra: PixelSpectra  # the frame's spectra and norms, shared by every object
    noise: float  # per-band sensor noise of the frame (reflectance units)
    _noise_angle: np.ndarray | None = None

    def noise_angle(self) -> np.ndarray:
        """(H, W) angle the sensor noise alone puts between a pixel and its noise-free spectrum (computed
        once per frame, shared by every object)."""
        if self._noise_angle is None:
            scale = np.float32(self.noise * np.sqrt(self.spectra.bands))
            inv_norm = self.spectra.inverse_norms()
            angle = np.where(inv_norm > 0, scale * inv_norm, HALF_PI)
            self._noise_angle = angle.reshape(self.spectra.shape).astype(np.float32, copy=False)
        return self._noise_angle


def click_points(clicks: list[Click], frame_id: int, window: int, shape: tuple[int, int]) -> list[Point]:
    """(row, col) of the clicks made within ``window`` frames of ``frame_id`` that fall inside ``shape``."""
    h, w = shape
    points = []
    for c in clicks:
        row, col = int(round(c.y)), int(round(c.x))
        if c.recent_on(frame_id, window) and 0 <= row < h and 0 <= col < w:
            points.append((row, col))
    return points


def noise_spread(references: np.ndarray, noise_angle: np.ndarray | None, noise: float) -> np.ndarray | None:
    """(H, W, K) angle that sensor noise alone puts between a pixel and reference k of the same material:
    sqrt(n(x)^2 + n_k^2), with n(x) the pixel's and n_k the reference's noise angle (per-band noise x
    sqrt(bands) / norm). None without a noise estimate."""
    if noise_angle is None or noise <= 0:
        return None
    ref_noise = noise * np.sqrt(references.shape[1]) / np.maximum(np.linalg.norm(references, axis=1), 1e-12)
    return np.sqrt(noise_angle[..., None] ** 2 + ref_noise.astype(np.float32) ** 2)


def threshold_ratio(theta_pos: np.ndarray, spread: np.ndarray | None, threshold: float,
                    noise_factor: float) -> np.ndarray:
    """(H, W, K) theta_k / t_k for every positive reference k, t_k = max(threshold, noise_factor x spread_k):
    a pixel within some reference's threshold has a ratio <= 1 for it."""
    if spread is None or noise_factor <= 0:
        return theta_pos / np.float32(threshold)
    return theta_pos / np.maximum(np.float32(threshold), np.float32(noise_factor) * spread)


RING_GAP = 2  # the ring around a click starts this far beyond the reference window ...
RING_WIDTH = 2  # ... and is this many pixels wide
RING_NOISE = 1.5  # a ring pixel is unlike the click beyond this multiple of the same-material noise angle ...
RING_MIN_RAD = 0.02  # ... and beyond this angle (material variability on nearly noise-free data)
RING_UNLIKE_SHARE = 0.5  # most of the ring unlike the click: a small target, or a click near a border
RING_MIN_PIXELS = 3  # fewer ring pixels within the threshold make no reference worth trusting


def surroundings(unlike_map: np.ndarray, within: np.ndarray, cube: np.ndarray, point: Point,
                 inner: int) -> np.ndarray | None:
    """The implicit negative reference of a click at ``point``, or None.

    Looks at the ring around the click (Chebyshev distance inner+RING_GAP .. +RING_WIDTH). When most of
    the ring is unlike the click (``unlike_map``), the click sits on a small target or near a border; the
    mean spectrum of the unlike ring pixels that are still within the click's threshold (``within``:
    those the threshold alone would wrongly take in) is the reference. Unlike pixels beyond the
    threshold are left out: they are excluded anyway, and mixing them in would blur the reference."""
    row, col = point
    lo = inner + RING_GAP
    hi = lo + RING_WIDTH
    top, left = max(0, row - hi), max(0, col - hi)
    window = unlike_map[top: row + hi + 1, left: col + hi + 1]
    dr, dc = np.indices(window.shape)
    ring = np.maximum(np.abs(dr + top - row), np.abs(dc + left - col)) >= lo
    unlike = ring & window
    if not ring.any() or np.count_nonzero(unlike) < RING_UNLIKE_SHARE * np.count_nonzero(ring):
        return None
    near = unlike & within[top: row + hi + 1, left: col + hi + 1]
    if np.count_nonzero(near) < RING_MIN_PIXELS:
        return None
    mean = cube[top: row + hi + 1, left: col + hi + 1][near].astype(np.float64).mean(axis=0)
    return mean.astype(np.float32) if np.any(mean) and np.all(np.isfinite(mean)) else None


def cut_towards(region: np.ndarray, keep_at: list[Point], cut_at: list[Point]) -> np.ndarray:
    """The pixels of ``region`` nearer (in a straight line) to a point of ``keep_at`` than to all of ``cut_at``."""
    rows, cols = np.nonzero(region)
    if not cut_at or rows.size == 0:
        return region
    def nearest(points: list[Point]) -> np.ndarray:
        p = np.asarray(points, dtype=np.float32)
        return np.min((rows[:, None] - p[None, :, 0]) ** 2 + (cols[:, None] - p[None, :, 1]) ** 2, axis=1)

    out = np.zeros_like(region)
    keep = nearest(keep_at) < nearest(cut_at)
    out[rows[keep], cols[keep]] = True
    return out


def select_regions(candidate: np.ndarray, keep_at: list[Point], anchor: np.ndarray | None,
                   reject_at: list[Point], min_area: int) -> np.ndarray:
    """The object's mask from the candidate pixels (see the module doc for the rules).

    Kept: regions holding a keep point (however small); regions of at least ``min_area`` pixels that
    touch the anchor (last frame's mask); every region of at least ``min_area`` when the keep points
    lie in two or more regions. Removed: a region holding a reject point and no keep point; in a region
    holding both, the pixels nearer to a reject point than to the keep points. With neither keep points
    nor an anchor (e.g. prompts restored after a restart), the largest region. A region that lost
    touch with its anchor is not guessed at: showing nothing is safer in theatre than the wrong tissue."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(candidate.shape, dtype=bool)
    large = stats[:, cv2.CC_STAT_AREA] >= min_area
    clicked = np.zeros(count, dtype=bool)
    for row, col in keep_at:
        clicked[regions[row, col]] = True
    clicked[0] = False
    keep = clicked.copy()
    if anchor is not None and anchor.any():
        touched = np.zeros(count, dtype=bool)
        touched[np.unique(regions[anchor])] = True
        keep |= touched & large
    if np.count_nonzero(clicked) >= 2:  # the object has several parts: every similar part belongs to it
        keep |= large
    rejected = [(r, c) for r, c in reject_at if regions[r, c] != 0]
    for row, col in rejected:
        if not clicked[regions[row, col]]:
            keep[regions[row, col]] = False
    keep[0] = False
    if not keep_at and (anchor is None or not anchor.any()):
        areas = stats[1:, cv2.CC_STAT_AREA]
        if areas.max() >= min_area:
            keep[1 + int(np.argmax(areas))] = True
    mask = keep[regions]
    for label in {int(regions[r, c]) for r, c in rejected if clicked[regions[r, c]]}:
        region = regions == label
        inside = [p for p in keep_at if regions[p] == label]
        mask[region] = cut_towards(region, inside, [p for p in rejected if regions[p] == label])[region]
    return mask


@dataclass
class SpectralMemory(EngineMemory):
    """What the spectral engine carries for one object besides ``ObjectMemory.last_mask``."""

    area: int  # pixels of the last mask shown
    lost: bool = False  # the last frame showed nothing: the object may return anywhere


REFIND_SHARE = 0.5  # a returning object is re-found only as a region of at least half its last area


def refind(candidate: np.ndarray, reject_at: list[Point], min_area: int) -> np.ndarray:
    """The largest candidate region of at least ``min_area`` pixels holding no reject point, or nothing:
    an object that left the view is picked up again by its spectrum, but not from a speck."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    for row, col in reject_at:
        areas[regions[row, col]] = 0
    best = int(np.argmax(areas))
    if count <= 1 or areas[best] < min_area:
        return np.zeros(candidate.shape, dtype=bool)
    return regions == best


class SpectralEngine(Engine[SpectralContext]):
    """Follows an object by its last mask (``ObjectMemory.last_mask``); when it is lost (out of view),
    re-finds it by spectrum (``SpectralMemory``)."""

    name = "spectral"

    def __init__(self, settings: SpectralEngineSettings, click_window: int = 4) -> None:
        self.settings = settings
        self.click_window = click_window
        self._last: dict[str, SpectralContext] = {}  # per stream: the newest prepared frame

    def prepare(self, frame: CubeFrame) -> SpectralContext:
        """The frame's spectra, norms and noise; a prompt change on the same frame reuses them."""
        cached = self._last.get(frame.stream_id)
        if cached is None or cached.frame is not frame:
            cached = self._last[frame.stream_id] = SpectralContext(
                frame=frame, spectra=PixelSpectra.of(frame.cube), noise=sensor_noise(frame.cube))
        return cached

    def forget(self, stream_id: str) -> None:
        self._last.pop(stream_id, None)

    def context_key(self) -> object:
        return SpectralContext  # the frame's spectra, whatever the settings

    def similarity(self, ctx: SpectralContext, obj: TrackedObject) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(similarity, angles (H, W, P) to the positive references, angle to the nearest negative or None)."""
        frame = ctx.frame
        pos = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.positives])
        theta_pos = ctx.spectra.angles(pos)
        theta_neg = None
        if obj.negatives:
            neg = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.negatives])
            theta_neg = ctx.spectra.angles(neg)
        sim = similarity_map(theta_pos, theta_neg)
        return sim, theta_pos, None if theta_neg is None else theta_neg.min(axis=2)

    def segment(self, ctx: SpectralContext, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        frame = ctx.frame
        knobs = self.settings
        sim, theta_pos, near_neg = self.similarity(ctx, obj)
        references = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.positives])
        noise_angle = ctx.noise_angle() if ctx.noise > 0 else None
        spread = noise_spread(references, noise_angle, ctx.noise)
        ratios = threshold_ratio(theta_pos, spread, knobs.threshold_rad, knobs.noise_factor)
        ratio = ratios.min(axis=2)
        candidate = ratio <= 1.0
        shape = candidate.shape
        fresh = [(k, (int(round(c.y)), int(round(c.x)))) for k, c in enumerate(obj.positives)
                 if c.recent_on(frame.frame_id, self.click_window)
                 and 0 <= round(c.y) < shape[0] and 0 <= round(c.x) < shape[1]]
        # Unlike the click: beyond half its threshold and clearly beyond what noise explains.
        unlike = ratios > 0.5
        if spread is not None:
            unlike &= theta_pos > np.float32(RING_NOISE) * spread
        unlike &= theta_pos > np.float32(RING_MIN_RAD)
        implicit = [ring for k, p in fresh[:1]  # the defining click only (see the module doc)
                    if (ring := surroundings(unlike[..., k], ratios[..., k] <= 1.0, frame.cube, p,
                                             knobs.reference_radius)) is not None]
        if implicit:
            near_ring = ctx.spectra.angles(np.stack(implicit)).min(axis=2)
            near_neg = near_ring if near_neg is None else np.minimum(near_neg, near_ring)
        if near_neg is not None:
            candidate &= theta_pos.min(axis=2) < near_neg
        keep_at = [p for _, p in fresh]
        reject_at = [p for p in click_points(obj.negatives, frame.frame_id, self.click_window, shape)
                     if p not in keep_at]
        for point in keep_at:
            candidate[point] = True
        for point in reject_at:
            candidate[point] = False
        anchor = memory.last_mask if memory.last_mask is not None and memory.last_mask.shape == shape else None
        mask = select_regions(candidate, keep_at, anchor, reject_at, knobs.min_area_px)
        kept = memory.engine if isinstance(memory.engine, SpectralMemory) else None
        if not mask.any() and not keep_at and kept is not None and kept.lost:
            mask = refind(candidate, reject_at, max(knobs.min_area_px, int(REFIND_SHARE * kept.area)))
        if mask.any():
            memory.last_mask = mask
            memory.engine = SpectralMemory(area=int(np.count_nonzero(mask)))
        elif kept is not None:  # out of view or hidden: re-found by its spectrum when it returns
            memory.engine = SpectralMemory(area=kept.area, lost=True)
        score = float(sim[mask].mean()) if mask.any() else 0.0
        logits = np.clip(10.0 * (1.0 - ratio), -10.0, 10.0).astype(np.float32)  # > 0 inside the threshold
        # Its memory is the last mask it found: one frame.
        return Segmentation(mask=mask, score=score, similarity=sim, logits=logits, present=bool(mask.any()),
                            memory_frames=int(memory.last_mask is not None))


__all__ = ["SpectralContext", "SpectralEngine", "SpectralMemory", "angle_to_similarity", "click_points", "cut_towards",
           "noise_spread", "refind", "select_regions", "surroundings", "threshold_ratio"]
