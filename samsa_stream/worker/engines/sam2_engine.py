"""What the rgb, prompt and decoder engines share: one SAM2 runner, the per-frame embedding cache,
the click model across frames, the spectral maps on the model's device, and the decode step.

Subclasses change only what enters SAM2: the dense mask prompt (``mask_prompt``), points added to
the clicks (``extra_points``) and additions to the decoder's skip features (``high_res_delta``).

Between clicks on one frame, the previous result's low-res logits go back in as the dense mask
prompt, as SAM2 does when points are added on a frame that already has a mask (re-running the same
clicks on the same frame feeds what that result was made from, so a repeat gives the same mask).

Across frames (until SAM2 streaming memory arrives in a later issue):
- a click is a point prompt only on frames within ``worker.frame_history`` frames of its own;
- on later frames the object is followed from its previous result: a positive point at the
  interior of the previous mask and the previous low-res logits as the dense mask prompt
  (the recent negative clicks still count); if there is no usable previous mask the object's
  positive clicks are used where they were made.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ...protocol import CubeFrame
from ...settings import WorkerSettings
from ..prompts import TrackedObject
from . import torch_angles
from .base import Engine, EngineMemory, FrameContext, ObjectMemory, Segmentation
from .point_sampling import interior_point
from .sam2_model import load_sam2
from .sam2_runner import LOW_RES_CLAMP, ImageFeatures, Sam2Runner

MAX_CACHED_STREAMS = 16  # one embedded frame kept per stream


@dataclass
class Sam2Context(FrameContext):
    """One frame's SAM2 embedding and, computed when first needed, its pixel spectra on the device."""

    features: ImageFeatures
    spectra: torch_angles.PixelSpectra | None = None

    def pixel_spectra(self, device: torch.device) -> torch_angles.PixelSpectra:
        if self.spectra is None:
            self.spectra = torch_angles.PixelSpectra.of(torch_angles.cube_to_device(self.frame.cube, device))
        return self.spectra


@dataclass
class SpectralMaps:
    """Similarity maps (H, W) in [0, 1] of one object on one frame, on the model's device."""

    positive: torch.Tensor  # best over the positive references
    negative: torch.Tensor | None  # best over the negative references (None without negatives)
    similarity: torch.Tensor  # positive pushed down where a negative is closer (DESIGN section 4)


@dataclass
class PointPrompts:
    """Point prompts in original pixels: (x = column, y = row) and label 1 (positive) / 0 (negative)."""

    coords: list[tuple[float, float]]
    labels: list[int]
    fresh: bool  # a positive click of the object is on or near this frame
    refine: bool = False  # the previous logits were made on this very frame (a click added to a mask)

    def add(self, x: float, y: float, label: int) -> None:
        self.coords.append((x, y))
        self.labels.append(label)


@dataclass
class DecodeInputs:
    """One object's prompts for the mask decoder on one frame."""

    maps: SpectralMaps | None  # the object's spectral maps (engines that use them)
    previous: torch.Tensor | None  # the previous result's low-res logits, where they still describe the object
    points: PointPrompts
    mask_logits: torch.Tensor | None  # the dense mask prompt


ClickSignature = tuple[tuple[float, float, bool, int], ...]


def click_signature(obj: TrackedObject) -> ClickSignature:
    return tuple((c.x, c.y, c.positive, c.frame_id) for c in obj.clicks)


@dataclass
class Sam2Memory(EngineMemory):
    """What a SAM2 engine carries for one object: the last good result's low-res logits, and what
    they were made from (the clicks then, the decoder grid and image size) to tell whether they
    still describe the object."""

    low_res: torch.Tensor  # (1, 1, S/4, S/4) logits of the kept mask
    clicks: ClickSignature
    grid: tuple[int, tuple[int, int]]  # (decoder mask size, (H, W) of the image)
    frame_id: int = -1  # the frame the kept mask was made on
    made_from: torch.Tensor | None = None  # the previous logits that went into it (None: from the clicks alone)


class Sam2Engine(Engine[Sam2Context]):
    """SAM2 on the pseudo-RGB; the base of every SAM2 engine (on its own it is the ``rgb`` engine)."""

    name = "rgb"
    uses_similarity = False  # whether segmentation needs the spectral maps

    def __init__(self, runner: Sam2Runner, settings: WorkerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.click_window = settings.frame_history
        self._frames: OrderedDict[str, Sam2Context] = OrderedDict()
        loaded = runner.loaded
        if loaded.random_weights:
            # The verdict first: a small overlay may show only the start of a notice.
            self.notices = (*self.notices, f"masks are meaningless: SAM2 {loaded.variant.name} has {loaded.source} "
                                           "(tests only; set worker.checkpoint to an official checkpoint)")

    @classmethod
    def build(cls, settings: WorkerSettings) -> Sam2Engine:
        """The engine with the SAM2 model the settings name (checkpoint or explicit random weights)."""
        return cls(Sam2Runner(load_sam2(settings)), settings)

    # -- per frame ---------------------------------------------------------------------------
    def prepare(self, frame: CubeFrame) -> Sam2Context:
        """Embed the frame, or return the embedding already computed for this very frame."""
        cached = self._frames.get(frame.stream_id)
        if cached is not None and cached.frame is frame:
            self._frames.move_to_end(frame.stream_id)
            return cached
        ctx = Sam2Context(frame=frame, features=self.runner.embed(frame.rgb))
        self._frames[frame.stream_id] = ctx
        self._frames.move_to_end(frame.stream_id)
        while len(self._frames) > MAX_CACHED_STREAMS:
            self._frames.popitem(last=False)
        return ctx

    def forget(self, stream_id: str) -> None:
        self._frames.pop(stream_id, None)

    def context_key(self) -> object:
        return self.runner  # the embedding depends on the model only

    # -- per object --------------------------------------------------------------------------
    def segment(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        frame = ctx.frame
        h, w = frame.cube.shape[:2]
        with torch.no_grad():
            inputs = self.decode_inputs(ctx, obj, memory)
            maps, previous, points = inputs.maps, inputs.previous, inputs.points
            decoded = self.runner.decode(ctx.features, np.asarray(points.coords, dtype=np.float32),
                                         np.asarray(points.labels, dtype=np.int32), mask_logits=inputs.mask_logits,
                                         multimask=len(points.labels) == 1,
                                         high_res_delta=self.high_res_delta(ctx, maps))
            best = decoded.best()
            logits = self.runner.upscale(decoded.low_res_raw[:, best:best + 1], (h, w))[0]
            mask = (logits > 0).cpu().numpy()
            score = float(decoded.scores[0, best].clamp(0, 1).item())
            if mask.any():  # an empty result keeps the last good state to re-find the object from
                memory.last_mask = mask
                memory.engine = Sam2Memory(low_res=decoded.low_res[:, best:best + 1], clicks=click_signature(obj),
                                           grid=(self.runner.mask_size, (h, w)), frame_id=frame.frame_id,
                                           made_from=previous)
            similarity = None if maps is None else maps.similarity.float().cpu().numpy()
        return Segmentation(mask=mask, score=score, similarity=similarity, logits=logits.float().cpu().numpy())

    def decode_inputs(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> DecodeInputs:
        """What goes into SAM2 for this object on this frame, short of the skip-feature additions
        (which ``high_res_delta`` makes from ``maps``; adapter training makes them with gradients)."""
        frame = ctx.frame
        maps = self.spectral_maps(ctx, obj) if self.uses_similarity else None
        previous = self.previous_logits(ctx, obj, memory)
        points = self.base_points(ctx, obj, memory)
        kept = memory.engine
        points.refine = previous is not None and isinstance(kept, Sam2Memory) and kept.frame_id == frame.frame_id
        self.extra_points(ctx, points, maps)
        return DecodeInputs(maps=maps, previous=previous, points=points,
                            mask_logits=self.mask_prompt(ctx, points, previous, maps))

    def spectral_maps(self, ctx: Sam2Context, obj: TrackedObject) -> SpectralMaps:
        """The object's similarity maps on this frame (references resampled to its bands)."""
        frame = ctx.frame
        spectra = ctx.pixel_spectra(self.runner.device)
        pos = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.positives])
        s_pos = torch_angles.angle_to_similarity(spectra.angles(pos).amin(dim=2))
        s_neg = None
        if obj.negatives:
            neg = np.stack([c.reference_on(frame.wavelengths_nm) for c in obj.negatives])
            s_neg = torch_angles.angle_to_similarity(spectra.angles(neg).amin(dim=2))
        return SpectralMaps(positive=s_pos, negative=s_neg, similarity=torch_angles.combine_similarity(s_pos, s_neg))

    def previous_logits(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> torch.Tensor | None:
        """Last result's low-res logits, if they still describe this object: same clicks or more
        (not after an undo or re-anchoring click), same image size. Asked again for the frame and
        clicks that result was made for, what it was made from (so a repeat is the same result)."""
        kept = memory.engine
        if not isinstance(kept, Sam2Memory) or memory.last_mask is None:
            return None
        clicks = click_signature(obj)
        if clicks[:len(kept.clicks)] != kept.clicks:
            return None
        if kept.grid != (self.runner.mask_size, ctx.frame.cube.shape[:2]):
            return None
        if kept.frame_id == ctx.frame.frame_id and clicks == kept.clicks:
            return kept.made_from
        return kept.low_res

    def base_points(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> PointPrompts:
        """The object's clicks near this frame, else the previous mask's interior (see module doc)."""
        frame = ctx.frame
        h, w = frame.cube.shape[:2]
        inside = [c for c in obj.clicks if 0 <= round(c.x) < w and 0 <= round(c.y) < h]
        recent = [c for c in inside if abs(frame.frame_id - c.frame_id) <= self.click_window]
        points = PointPrompts([], [], fresh=any(c.positive for c in recent))
        if not points.fresh:
            last = memory.last_mask
            anchor = interior_point(last) if last is not None and last.shape == (h, w) else None
            if anchor is not None:
                points.add(float(anchor[1]), float(anchor[0]), 1)
            else:
                for c in inside:
                    if c.positive:
                        points.add(c.x, c.y, 1)
        for c in recent:
            points.add(c.x, c.y, int(c.positive))
        if 1 not in points.labels:  # every positive click is off this (smaller) frame: keep the object alive
            first = obj.positives[0]
            points.add(float(min(max(first.x, 0), w - 1)), float(min(max(first.y, 0), h - 1)), 1)
        return points

    # -- what subclasses change ------------------------------------------------------------------
    def extra_points(self, ctx: Sam2Context, points: PointPrompts, maps: SpectralMaps | None) -> None:
        """Add point prompts beyond the clicks (none for plain SAM2)."""

    def mask_prompt(self, ctx: Sam2Context, points: PointPrompts, previous: torch.Tensor | None,
                    maps: SpectralMaps | None) -> torch.Tensor | None:
        """Dense mask prompt (1, 1, S/4, S/4): the previous low-res logits when refining a mask on its own
        frame or following the object on later frames; none on a newly clicked frame (SAM2's predictor
        on the clicks)."""
        return previous if points.refine or not points.fresh else None

    def high_res_delta(self, ctx: Sam2Context, maps: SpectralMaps | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Additions to the decoder's 1/4 and 1/8 skip features (none for plain SAM2)."""
        return None


def clamp_logits(logits: torch.Tensor) -> torch.Tensor:
    """Keep a dense mask prompt within the logit range SAM2's predictor feeds back."""
    return logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
