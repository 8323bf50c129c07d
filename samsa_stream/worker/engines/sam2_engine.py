"""What the rgb, prompt and decoder engines share: one SAM2 runner and streaming tracker, the
per-frame image-encoder run, the spectral maps on the model's device, and the per-object step.

Across frames each object is followed by SAM2's streaming memory (``Sam2Tracker``, docs/engines.md):
- new clicks on a frame make it a conditioning frame of the object at its real frame index (a click
  made on a frame the worker has already moved past, as a display's lag makes it, is applied to the
  newest frame at the same position: the object moved by at most a few frames' motion);
- clicks added on the frame already clicked refine it (earlier clicks and the previous logits go in
  again, as SAM2 does);
- every later frame is segmented from the object's memory and joins its recent window;
- an undo goes back to the memory as it was before the undone click (the last ``MAX_UNDO`` click
  rounds are kept); further back, the object starts again from its remaining clicks;
- a stream restart (frame ids going back) keeps the conditioning frames and drops the recent window;
  the new frames continue the object's timeline after the last frame it saw.

Subclasses change only what enters SAM2 besides the clicks, on clicked and tracked frames alike:
points added to the clicks (``extra_points``, clicked frames) and ``guidance`` (a dense mask prompt,
additions to the decoder's high-resolution skip features).

One frame on its own (``segment_image``, what adapter training learns on) is SAM2's image
predictor: the clicks on the frame, and between clicks the previous result's low-res logits as the
dense mask prompt (re-running the same clicks feeds what that result was made from, so a repeat
gives the same mask).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from ...protocol import CubeFrame
from ...settings import WorkerSettings
from ..prompts import TrackedObject
from . import torch_angles
from .base import Engine, EngineError, EngineMemory, FrameContext, ObjectMemory, Segmentation, run_synthetic
from .device import Pending
from .sam2_model import load_sam2
from .sam2_runner import LOW_RES_CLAMP, ImageFeatures, Sam2Runner
from .sam2_tracker import Guidance, ObjectTrack, Sam2Tracker, TrackerFrame, TrackResult
from .track_state import load_track_and_extra, model_identity, save_track, track_layout

MAX_CACHED_STREAMS = 16  # one embedded frame kept per stream
MAX_UNDO = 8  # click rounds per object whose memory from before is kept for undo
_revisions = itertools.count(1)  # memory revisions, unique across objects (a saved one is never mistaken)


@dataclass
class Sam2Context(FrameContext):
    """One frame's SAM2 embedding (as the image predictor and as the tracker use it) and, computed
    when first needed, its pixel spectra on the device."""

    features: ImageFeatures
    tracked: TrackerFrame | None = None  # None for a context made for single-image use only
    spectra: torch_angles.PixelSpectra | None = None
    cube: Pending | None = None  # the cube on its way to the device, started with the image encoder's run

    def pixel_spectra(self, device: torch.device) -> torch_angles.PixelSpectra:
        if self.spectra is None:
            if self.cube is not None:
                cube = self.cube.get()
                self.cube = None
            else:
                cube = torch_angles.cube_to_device(self.frame.cube, device, keep_half=device.type != "cpu")
            self.spectra = torch_angles.PixelSpectra.of(cube)
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
    """What ``segment_image`` carries for one object between clicks on one frame: the last result's
    low-res logits and what they were made from (the clicks then, the decoder grid and image size)
    to tell whether they still describe the object."""

    low_res: torch.Tensor  # (1, 1, S/4, S/4) logits of the kept mask
    clicks: ClickSignature
    grid: tuple[int, tuple[int, int]]  # (decoder mask size, (H, W) of the image)
    frame_id: int = -1  # the frame the kept mask was made on
    made_from: torch.Tensor | None = None  # the previous logits that went into it (None: from the clicks alone)


@dataclass
class UndoPoint:
    """An object's memory before one round of clicks was applied."""

    applied: int  # how many of the object's clicks were applied then
    track: ObjectTrack
    frame_points: list[tuple[float, float, int]]
    offset: int


@dataclass
class Sam2TrackMemory(EngineMemory):
    """One object's SAM2 streaming memory and how the object's clicks went into it."""

    track: ObjectTrack
    applied: ClickSignature = ()  # the object's clicks already in the memory, in order
    frame_points: list[tuple[float, float, int]] = field(default_factory=list)  # (x, y, label) on track.last_frame
    offset: int = 0  # the tracker's frame index is the frame id plus this (moved when the stream restarts)
    restarted: bool = False  # the stream restarted: rebase before the next frame
    revision: int = field(default_factory=lambda: next(_revisions))  # changes whenever what is saved changes
    undo: list[UndoPoint] = field(default_factory=list)

    def touch(self) -> None:
        self.revision = next(_revisions)

    def reanchored(self, restart: bool) -> EngineMemory | None:
        # Memory is what re-finds the object: a click on an older frame adds to it, a restart rebases it.
        self.restarted = self.restarted or restart
        return self


class Sam2Engine(Engine[Sam2Context]):
    """SAM2 on the pseudo-RGB; the base of every SAM2 engine (on its own it is the ``rgb`` engine)."""

    name = "rgb"
    uses_similarity = False  # whether segmentation needs the spectral maps
    keeps_memory = True

    def __init__(self, runner: Sam2Runner, settings: WorkerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.tracker = Sam2Tracker(runner, max_cond_frames=settings.max_cond_frames)
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
    batch_prepare = True

    def prepare(self, frame: CubeFrame) -> Sam2Context:
        """Run the image encoder on the frame, or return what it gave for this very frame."""
        return self.prepare_many([frame])[0]

    def prepare_many(self, frames: list[CubeFrame]) -> list[Sam2Context]:
        """``prepare`` of each frame; the frames not prepared yet go through the image encoder in batches of
        ``worker.batch_streams`` (one run per batch). On CUDA each cube's upload to the device (for the
        spectral maps) is started once the encoder's run is queued, so the copy overlaps it."""
        out: dict[int, Sam2Context] = {}
        todo: list[tuple[int, CubeFrame]] = []
        for i, frame in enumerate(frames):
            cached = self._frames.get(frame.stream_id)
            if cached is not None and cached.frame is frame:
                self._frames.move_to_end(frame.stream_id)
                out[i] = cached
            else:
                todo.append((i, frame))
        size = max(1, self.settings.batch_streams)
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            backbones = self.runner.forward_images([frame.rgb for _, frame in chunk])
            # Queued after the encoder: on the side stream the cubes then travel while it runs, not before it.
            cubes = [self.runner.uploader.start(frame.cube) if self.uses_similarity else None for _, frame in chunk]
            for (i, frame), backbone, cube in zip(chunk, backbones, cubes, strict=True):
                hw = (int(frame.rgb.shape[0]), int(frame.rgb.shape[1]))
                ctx = Sam2Context(frame=frame, features=self.runner.features_of(backbone, hw),
                                  tracked=self.tracker.frame_of(backbone, hw), cube=cube)
                self._frames[frame.stream_id] = ctx
                self._frames.move_to_end(frame.stream_id)
                out[i] = ctx
        while len(self._frames) > MAX_CACHED_STREAMS:
            self._frames.popitem(last=False)
        return [out[i] for i in range(len(frames))]

    def forget(self, stream_id: str) -> None:
        self._frames.pop(stream_id, None)

    def warm_up(self, frames: int) -> int:
        """``frames`` synthetic frames (see ``base.run_synthetic``): the first clicked, the rest tracked. The
        memory attention runs from the second frame on, so a compiled one is warmed with two at least."""
        if frames <= 0:
            return 0
        if "memory_attention" in self.runner.loaded.compiled:
            frames = max(frames, 2)
        return run_synthetic(self, frames)

    def context_key(self) -> object:
        return self.runner  # the embedding depends on the model only

    # -- per object, across frames -------------------------------------------------------------
    def segment(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        """The object on this frame from its memory and any new clicks; a context made for single
        images (no ``tracked`` frame, as adapter training makes) is segmented by ``segment_image``."""
        if ctx.tracked is None:
            return self.segment_image(ctx, obj, memory)
        frame = ctx.frame
        with torch.no_grad():
            mem = self._track_memory(obj, memory)
            track = mem.track
            if track.cond and (mem.restarted or frame.frame_id + mem.offset < track.last_frame):
                self.tracker.restart(track)
                mem.offset = track.last_frame + 1 - frame.frame_id
                mem.frame_points = []
                mem.touch()
            mem.restarted = False
            index = frame.frame_id + mem.offset
            maps = self.spectral_maps(ctx, obj) if self.uses_similarity else None
            guidance = self.guidance(ctx, maps)
            new = obj.clicks[len(mem.applied):]
            if new:
                result = self._click(ctx, obj, mem, index, new, maps, guidance)
            else:
                moved = index != track.last_frame
                result = self.tracker.track(track, index, ctx.tracked, guidance)
                if moved:
                    mem.frame_points = []
            for point in mem.undo:  # what an undo goes back to holds nothing the next frame cannot read
                self.tracker.trim(point.track, track.last_frame)
            if result.mask.any():
                memory.last_mask = result.mask
            similarity = None if maps is None else maps.similarity.float().cpu().numpy()
        score = min(max(result.iou, 0.0), 1.0) if result.present else 0.0
        return Segmentation(mask=result.mask, score=score, similarity=similarity, logits=result.logits,
                            present=result.present, memory_frames=track.memory_entries())

    def _track_memory(self, obj: TrackedObject, memory: ObjectMemory) -> Sam2TrackMemory:
        """The object's memory, gone back to before any click that was taken back (see the module doc)."""
        kept = memory.engine if isinstance(memory.engine, Sam2TrackMemory) else None
        clicks = click_signature(obj)
        if kept is not None and clicks[:len(kept.applied)] != kept.applied:
            common = next((i for i, (a, b) in enumerate(zip(clicks, kept.applied, strict=False)) if a != b),
                          min(len(clicks), len(kept.applied)))
            while kept.undo and kept.undo[-1].applied > common:
                kept.undo.pop()
            if kept.undo:
                point = kept.undo.pop()
                kept.track, kept.applied = point.track, kept.applied[:point.applied]
                kept.frame_points, kept.offset = point.frame_points, point.offset
                kept.touch()
            else:
                kept = None
        if kept is None:
            kept = Sam2TrackMemory(track=self.tracker.new_track())
            memory.engine = kept
        return kept

    def _click(self, ctx: Sam2Context, obj: TrackedObject, mem: Sam2TrackMemory, index: int, new: list,
               maps: SpectralMaps | None, guidance: Guidance | None) -> TrackResult:
        """Apply ``new`` clicks on this frame (with the object's earlier clicks on it, if any)."""
        assert ctx.tracked is not None  # checked by segment
        h, w = ctx.frame.cube.shape[:2]
        track = mem.track
        mem.undo.append(UndoPoint(len(mem.applied), track.copy(), list(mem.frame_points), mem.offset))
        del mem.undo[:-MAX_UNDO]
        earlier = mem.frame_points if index == track.last_frame else []
        # A click from a larger frame of the stream lands on this frame's edge.
        added = [(float(min(max(c.x, 0), w - 1)), float(min(max(c.y, 0), h - 1)), int(c.positive)) for c in new]
        mem.frame_points = [*earlier, *added]
        points = PointPrompts([(x, y) for x, y, _ in mem.frame_points], [label for _, _, label in mem.frame_points])
        self.extra_points(ctx, points, maps)
        result = self.tracker.click(track, index, ctx.tracked, np.asarray(points.coords, dtype=np.float32),
                                    np.asarray(points.labels, dtype=np.int32), replace=True, guidance=guidance)
        mem.applied = click_signature(obj)
        mem.touch()
        return result

    # -- memory across restarts ----------------------------------------------------------------
    def memory_revision(self, memory: ObjectMemory) -> int | None:
        kept = memory.engine
        return kept.revision if isinstance(kept, Sam2TrackMemory) and kept.track.cond else None

    def save_memory(self, memory: ObjectMemory) -> bytes:
        kept = memory.engine
        if not isinstance(kept, Sam2TrackMemory):
            raise EngineError("this object has no SAM2 memory to save")
        extra = {"engine": self.name, "offset": kept.offset,
                 "applied": [[x, y, positive, frame] for x, y, positive, frame in kept.applied],
                 "frame_points": [list(p) for p in kept.frame_points]}
        return save_track(kept.track, model_identity(self.runner), extra=extra)

    def load_memory(self, data: bytes, obj: TrackedObject) -> EngineMemory:
        track, extra = load_track_and_extra(data, model_identity(self.runner), self.runner.device,
                                            track_layout(self.tracker))
        if extra.get("engine") != self.name:
            raise EngineError(f"saved memory was made by engine {str(extra.get('engine'))[:40]!r}, this worker runs "
                              f"{self.name!r}")
        try:
            applied: ClickSignature = tuple((float(x), float(y), bool(p), int(f)) for x, y, p, f in extra["applied"])
            frame_points = [(float(x), float(y), int(label)) for x, y, label in extra["frame_points"]]
            offset = int(extra["offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"saved memory's click record is unreadable ({type(exc).__name__}: {exc})") from None
        if click_signature(obj)[:len(applied)] != applied:
            raise EngineError("saved memory was made from other clicks than the object has now")
        return Sam2TrackMemory(track=track, applied=applied, frame_points=frame_points, offset=offset)

    # -- one frame on its own (adapter training) -----------------------------------------------
    def segment_image(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        """The object on this frame from its clicks alone, as SAM2's image predictor segments it."""
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
            host = torch.cat([logits.reshape(-1), decoded.scores[0, best:best + 1].clamp(0, 1)]).cpu()  # one copy
            full = host[:-1].reshape(logits.shape).numpy()
            mask = full > 0
            score = float(host[-1])
            if mask.any():  # an empty result keeps the last good state to refine from
                memory.last_mask = mask
                memory.engine = Sam2Memory(low_res=decoded.low_res[:, best:best + 1], clicks=click_signature(obj),
                                           grid=(self.runner.mask_size, (h, w)), frame_id=frame.frame_id,
                                           made_from=previous)
            similarity = None if maps is None else maps.similarity.float().cpu().numpy()
        return Segmentation(mask=mask, score=score, similarity=similarity, logits=full)

    def decode_inputs(self, ctx: Sam2Context, obj: TrackedObject, memory: ObjectMemory) -> DecodeInputs:
        """What goes into SAM2 for this object on this frame in ``segment_image``, short of the
        skip-feature additions (which ``high_res_delta`` makes from ``maps``; adapter training makes
        them with gradients)."""
        frame = ctx.frame
        maps = self.spectral_maps(ctx, obj) if self.uses_similarity else None
        previous = self.previous_logits(ctx, obj, memory)
        points = self.base_points(ctx, obj)
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
        """Last result's low-res logits on this frame, if they still describe this object: same clicks
        or more (not after an undo), same image size. Asked again for the clicks that result was made
        for, what it was made from (so a repeat is the same result)."""
        kept = memory.engine
        if not isinstance(kept, Sam2Memory) or memory.last_mask is None or kept.frame_id != ctx.frame.frame_id:
            return None
        clicks = click_signature(obj)
        if clicks[:len(kept.clicks)] != kept.clicks:
            return None
        if kept.grid != (self.runner.mask_size, ctx.frame.cube.shape[:2]):
            return None
        if clicks == kept.clicks:
            return kept.made_from
        return kept.low_res

    def base_points(self, ctx: Sam2Context, obj: TrackedObject) -> PointPrompts:
        """The object's clicks as point prompts on this frame (a click outside it lands on its edge)."""
        h, w = ctx.frame.cube.shape[:2]
        points = PointPrompts([], [])
        for c in obj.clicks:
            points.add(float(min(max(c.x, 0), w - 1)), float(min(max(c.y, 0), h - 1)), int(c.positive))
        return points

    # -- what subclasses change ------------------------------------------------------------------
    def extra_points(self, ctx: Sam2Context, points: PointPrompts, maps: SpectralMaps | None) -> None:
        """Add point prompts beyond the clicks (none for plain SAM2)."""

    def guidance(self, ctx: Sam2Context, maps: SpectralMaps | None) -> Guidance | None:
        """What the engine adds to SAM2's inputs on every tracked or clicked frame (none for plain SAM2)."""
        return None

    def mask_prompt(self, ctx: Sam2Context, points: PointPrompts, previous: torch.Tensor | None,
                    maps: SpectralMaps | None) -> torch.Tensor | None:
        """Dense mask prompt (1, 1, S/4, S/4) for ``segment_image``: the previous low-res logits when
        refining a mask on its frame; none on a newly clicked frame (SAM2's predictor on the clicks)."""
        return previous if points.refine else None

    def high_res_delta(self, ctx: Sam2Context, maps: SpectralMaps | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Additions to the decoder's 1/4 and 1/8 skip features (none for plain SAM2)."""
        return None


def clamp_logits(logits: torch.Tensor) -> torch.Tensor:
    """Keep a dense mask prompt within the logit range SAM2's predictor feeds back."""
    return logits.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
