"""SAM2 streaming memory for a live stream: frames arrive one by one and are never revisited.

Each object has its own memory (SAM2.1 runs every object on its own):
- conditioning frames: the frames that got clicks, at their real frame index, at most
  ``max_cond_frames`` of them (the first and the newest are kept; the model's own
  ``max_cond_frames_in_attn`` still picks which of them each frame attends to);
- a window of recent tracked frames: the current one, plus memory features for the model's
  ``num_maskmem - 1`` frame slots before it and object pointers for the ``max_obj_ptrs_in_encoder - 1``
  slots before it (older entries are dropped, so nothing grows with the stream's length).

One image-encoder run per frame (``frame_features``) serves every object. ``click`` makes the
frame a conditioning frame of the object (or refines it, feeding the previous logits back as
SAM2 does); ``track`` segments a later frame from the object's memory and adds it to the window.
Temporal positions are the real frame indices, so dropped frames leave a gap.

The step is SAM2's track step (memory attention, then the prompt encoder and mask decoder), run on a
memory bank built from the bounded state, with SAM2's video-predictor policy: a frame clicked before
it was tracked starts from its clicks alone (no memory), a frame clicked after it was tracked is
refined with memory and becomes a conditioning frame (the predictor's
``add_all_frames_to_correct_as_cond``), memory masks of clicked frames are binarized, memory
features are stored in bfloat16. The predictor's optional
hole filling (a CUDA extension) is not done.

``Guidance`` lets an engine add to what enters the mask decoder on any frame, clicked or tracked:
a dense mask prompt (added to the previous logits when a click refines a frame) and additions to
the decoder's high-resolution skip features. Without guidance the step is SAM2's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import EngineError
from .device import graph_step
from .sam2_runner import LOW_RES_CLAMP, Sam2Runner


@dataclass
class TrackerFrame:
    """One frame's image-encoder output in the layout SAM2's memory path uses, shared by all objects."""

    vision_feats: list[torch.Tensor]  # per feature level, (h*w, 1, C); the last is the 1/16 level
    vision_pos: list[torch.Tensor]  # positional encodings, same layout
    feat_sizes: list[tuple[int, int]]  # (h, w) of each level
    orig_hw: tuple[int, int]  # the original image size (H, W)


@dataclass
class Guidance:
    """What an engine adds to SAM2's inputs on one frame (see the module doc)."""

    dense: torch.Tensor | None = None  # (1, 1, S/4, S/4) logits: a dense mask prompt
    high_res_delta: tuple[torch.Tensor, torch.Tensor] | None = None  # added to the 1/4 and 1/8 skip features


@dataclass
class MemoryEntry:
    """What one processed frame leaves in an object's memory."""

    frame_idx: int
    maskmem_features: torch.Tensor | None  # (1, mem_dim, S/16, S/16) bfloat16; None once out of the window
    maskmem_pos_enc: list[torch.Tensor] | None
    obj_ptr: torch.Tensor  # (1, hidden_dim)
    object_score_logits: torch.Tensor  # (1, 1)

    def as_output(self) -> dict[str, object]:
        """The entry in the form SAM2's memory selection reads."""
        return {"maskmem_features": self.maskmem_features, "maskmem_pos_enc": self.maskmem_pos_enc,
                "obj_ptr": self.obj_ptr, "object_score_logits": self.object_score_logits}


@dataclass
class TrackResult:
    """One object's segmentation of one frame."""

    frame_idx: int
    low_res: torch.Tensor  # (1, 1, S/4, S/4) logits on the device (what goes back in on a refining click)
    logits: np.ndarray  # (H, W) float32 at the original image size
    object_score_logit: float
    iou: float  # the mask decoder's predicted IoU of the mask it chose
    present: bool  # the model's object-presence decision (score logit > 0)
    mask: np.ndarray  # (H, W) bool, logits > 0


@dataclass
class ObjectTrack:
    """One object's memory; create it with ``Sam2Tracker.new_track``, change it only through the tracker."""

    cond: dict[int, MemoryEntry] = field(default_factory=dict)  # conditioning frames by frame index
    recent: dict[int, MemoryEntry] = field(default_factory=dict)  # tracked frames by frame index, oldest first
    last_frame: int = -1  # the newest frame processed for this object
    last_result: TrackResult | None = None  # the result on ``last_frame``
    last_tracked: bool = False  # whether ``last_frame`` went through ``track`` (clicks then refine with memory)
    points: tuple[torch.Tensor, torch.Tensor] | None = None  # clicks on ``last_frame``: (1, N, 2) model px, (1, N)

    def copy(self) -> ObjectTrack:
        """An independent copy (tensors are shared: the tracker never changes a tensor in place)."""
        return ObjectTrack(cond={t: replace(e) for t, e in self.cond.items()},
                           recent={t: replace(e) for t, e in self.recent.items()}, last_frame=self.last_frame,
                           last_result=self.last_result, last_tracked=self.last_tracked, points=self.points)

    def memory_entries(self) -> int:
        """Stored memory feature maps (conditioning plus recent)."""
        return sum(e.maskmem_features is not None for e in (*self.cond.values(), *self.recent.values()))

    def pointer_entries(self) -> int:
        """Stored object pointers (conditioning plus recent)."""
        return len(self.cond) + len(self.recent)


class Sam2Tracker:
    """SAM2's streaming memory over a live stream, for any number of independent objects."""

    def __init__(self, runner: Sam2Runner, max_cond_frames: int = 4, binarize_clicked_masks: bool = True) -> None:
        """``max_cond_frames`` (>= 2) caps the conditioning frames kept per object (the first and the
        newest stay); ``binarize_clicked_masks`` encodes clicked frames' masks as hard masks, as SAM2's
        video predictor does."""
        if max_cond_frames < 2:
            raise EngineError(f"max_cond_frames must be at least 2 (the first and the newest), got {max_cond_frames}")
        self.runner = runner
        self.model = runner.model
        self.max_cond_frames = max_cond_frames
        self.binarize_clicked_masks = binarize_clicked_masks
        model = self.model
        if int(model.num_maskmem) < 1:
            raise EngineError("this SAM2 model has no memory (num_maskmem is 0), so it cannot track")
        # Frames back the model reads: memory features for num_maskmem - 1, pointers for max_obj_ptrs - 1.
        self.memory_window = int(model.num_maskmem) - 1
        self.pointer_window = int(model.max_obj_ptrs_in_encoder) - 1 if model.use_obj_ptrs_in_encoder else 0
        self._pos_enc: list[torch.Tensor] | None = None  # the memory positional encoding is the same for every frame

    # -- per frame -------------------------------------------------------------------------------
    @torch.no_grad()
    def frame_features(self, rgb: np.ndarray) -> TrackerFrame:
        """The image encoder's output for one uint8 (H, W, 3) frame (its only run for that frame)."""
        return self.frame_of(self.runner.forward_image(rgb), (int(rgb.shape[0]), int(rgb.shape[1])))

    def frame_of(self, backbone: dict[str, Any], orig_hw: tuple[int, int]) -> TrackerFrame:
        """The memory path's layout of an image-encoder output (``Sam2Runner.forward_image``)."""
        model = self.model
        levels = backbone["backbone_fpn"][-model.num_feature_levels:]
        pos = backbone["vision_pos_enc"][-model.num_feature_levels:]
        return TrackerFrame(vision_feats=[x.flatten(2).permute(2, 0, 1) for x in levels],
                            vision_pos=[x.flatten(2).permute(2, 0, 1) for x in pos],
                            feat_sizes=[(int(x.shape[-2]), int(x.shape[-1])) for x in pos],
                            orig_hw=orig_hw)

    # -- per object ------------------------------------------------------------------------------
    def new_track(self) -> ObjectTrack:
        """An empty memory for a new object (its first ``click`` starts it)."""
        return ObjectTrack()

    def restart(self, track: ObjectTrack) -> None:
        """The stream restarted: keep the conditioning frames (what the object looked like where it was
        clicked), drop the recent window (where it was before the restart). Continue at any later frame."""
        track.recent.clear()
        track.last_result = None
        track.points = None
        track.last_tracked = False

    @torch.no_grad()
    def click(self, track: ObjectTrack, frame_idx: int, frame: TrackerFrame, points_xy: np.ndarray,
              labels: np.ndarray, replace: bool = False, guidance: Guidance | None = None) -> TrackResult:
        """Clicks on ``frame_idx``: (N, 2) points (x = column, y = row) in original pixels, labels (N,) 1/0.

        The frame becomes (or stays) a conditioning frame of the object. Points add to the object's
        earlier clicks on this frame (``replace`` drops those) and its previous logits on this frame
        go in as the mask prompt. A frame the object was already tracked on is refined with its
        memory; otherwise the clicks alone segment it. ``guidance.dense`` adds to the previous logits.
        """
        self._check_order(track, frame_idx)
        coords, point_labels = self._model_points(frame, points_xy, labels)
        same_frame = track.last_frame == frame_idx and track.last_result is not None
        if same_frame and not replace and track.points is not None:
            coords = torch.cat([track.points[0], coords], dim=1)
            point_labels = torch.cat([track.points[1], point_labels], dim=1)
        previous = None
        if same_frame and track.last_result is not None:
            previous = track.last_result.low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        is_init = not (same_frame and track.last_tracked)
        # The frame's own earlier entry is never its memory; the clicked result replaces it.
        track.cond.pop(frame_idx, None)
        track.recent.pop(frame_idx, None)
        dense = guidance.dense if guidance is not None else None
        if dense is not None:
            previous = dense if previous is None else previous + dense
        if previous is not None:
            previous = previous.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        delta = guidance.high_res_delta if guidance is not None else None
        out = self._step(track, frame_idx, frame, is_init, {"point_coords": coords, "point_labels": point_labels},
                         previous, delta)
        low_res = out["pred_masks"]
        with self.runner.autocast():
            high_res = F.interpolate(low_res, size=(self.runner.image_size,) * 2, mode="bilinear", align_corners=False)
            entry = self._entry(frame_idx, frame, high_res, out, from_clicks=True)
        track.cond[frame_idx] = entry
        self._cap_conditioning(track)
        track.points = (coords, point_labels)
        track.last_tracked = track.last_tracked and same_frame
        return self._finish(track, frame_idx, frame, low_res, out)

    @torch.no_grad()
    def track(self, track: ObjectTrack, frame_idx: int, frame: TrackerFrame,
              guidance: Guidance | None = None) -> TrackResult:
        """The object on a later frame, segmented from its memory; the frame joins the recent window.
        Asked again for the frame it was last processed on, the result there is returned."""
        if not track.cond:
            raise EngineError("this object has no clicks yet: call click before track")
        if frame_idx == track.last_frame and track.last_result is not None:
            return track.last_result  # as SAM2's predictor returns a conditioning frame's own result
        self._check_order(track, frame_idx)
        dense = guidance.dense.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP) if guidance and guidance.dense is not None else None
        out = self._step(track, frame_idx, frame, False, None, dense, guidance.high_res_delta if guidance else None)
        with self.runner.autocast():
            entry = self._entry(frame_idx, frame, out["pred_masks_high_res"], out, from_clicks=False)
        track.recent[frame_idx] = entry
        track.points = None
        track.last_tracked = True
        return self._finish(track, frame_idx, frame, out["pred_masks"], out)

    # -- internals -------------------------------------------------------------------------------
    def _check_order(self, track: ObjectTrack, frame_idx: int) -> None:
        if frame_idx < 0:
            raise EngineError(f"frame index must be >= 0, got {frame_idx}")
        if frame_idx < track.last_frame:
            raise EngineError(f"frame {frame_idx} arrived after frame {track.last_frame}; a live track only goes "
                              "forward (start a new track to go back)")

    def _model_points(self, frame: TrackerFrame, points_xy: np.ndarray,
                      labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Original-pixel points -> SAM2's input-size coordinates, with the predictor's float operations."""
        points = np.asarray(points_xy, dtype=np.float32)
        marks = np.asarray(labels)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
            raise EngineError(f"click points must be an (N, 2) array of (x, y) with N >= 1, got shape {points.shape}")
        if marks.shape != (points.shape[0],) or not np.isin(marks, (0, 1)).all():
            raise EngineError(f"click labels must be {points.shape[0]} values of 1 (positive) or 0 (negative), "
                              f"got {marks.tolist()}")
        if not np.isfinite(points).all():
            raise EngineError("click points must be finite")
        h, w = frame.orig_hw
        coords = torch.from_numpy(points)[None] / torch.tensor([w, h])
        coords = (coords * self.runner.image_size).to(self.runner.device)
        return coords, torch.from_numpy(marks.astype(np.int32))[None].to(self.runner.device)

    def _step(self, track: ObjectTrack, frame_idx: int, frame: TrackerFrame, is_init: bool,
              points: dict[str, torch.Tensor] | None, mask_prompt: torch.Tensor | None,
              high_res_delta: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """SAM2's track step on the object's bounded memory: memory attention over the bank, then the
        prompt encoder and mask decoder with the points and the dense ``mask_prompt``, the skip features
        plus ``high_res_delta``. Without those two it computes what SAM2's ``track_step`` does with
        ``prev_sam_mask_logits``; memory encoding is left to the caller."""
        model = self.model
        bank = {"cond_frame_outputs": {t: e.as_output() for t, e in track.cond.items()},
                "non_cond_frame_outputs": {t: e.as_output() for t, e in track.recent.items()}}
        # A live stream has no length; any count above frame_idx and the pointer cap reads the same memory.
        num_frames = frame_idx + 1 + int(model.max_obj_ptrs_in_encoder)
        feats, sizes = frame.vision_feats, frame.feat_sizes
        if self.runner.loaded.cuda_graphs:
            graph_step()  # the last replay's outputs are spent: a compiled memory attention may overwrite them
        with self.runner.autocast():
            high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(feats[:-1], sizes[:-1],
                                                                                          strict=True)]
            if high_res_delta is not None:
                high_res = [h + d for h, d in zip(high_res, high_res_delta, strict=True)]
            pix_feat = model._prepare_memory_conditioned_features(
                frame_idx=frame_idx, is_init_cond_frame=is_init, current_vision_feats=feats[-1:],
                current_vision_pos_embeds=frame.vision_pos[-1:], feat_sizes=sizes[-1:], output_dict=bank,
                num_frames=num_frames, track_in_reverse=False)
            _, _, ious, low_res, high_res_mask, obj_ptr, score = model._forward_sam_heads(
                backbone_features=pix_feat, point_inputs=points, mask_inputs=mask_prompt, high_res_features=high_res,
                multimask_output=model._use_multimask(is_init, points))
        self.runner.decodes += 1
        return {"pred_masks": low_res, "pred_masks_high_res": high_res_mask, "obj_ptr": obj_ptr,
                "object_score_logits": score, "iou": ious.float().max(dim=1).values}

    def _entry(self, frame_idx: int, frame: TrackerFrame, high_res: torch.Tensor, out: dict[str, torch.Tensor],
               from_clicks: bool) -> MemoryEntry:
        """Encode the frame and its mask into a memory entry (SAM2's ``_encode_new_memory``, with the
        predictor's binarized masks on clicked frames)."""
        model = self.model
        h, w = frame.feat_sizes[-1]
        pix_feat = frame.vision_feats[-1].permute(1, 2, 0).reshape(1, -1, h, w)
        if from_clicks and self.binarize_clicked_masks:
            mask = (high_res > 0).float()
        else:
            mask = torch.sigmoid(high_res)
        if model.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * model.sigmoid_scale_for_mem_enc
        if model.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + model.sigmoid_bias_for_mem_enc
        encoded = model.memory_encoder(pix_feat, mask, skip_mask_sigmoid=True)
        features = encoded["vision_features"]
        score = out["object_score_logits"]
        if model.no_obj_embed_spatial is not None:  # marks a memory frame where the object is absent
            absent = 1 - (score > 0).float()
            features = features + absent[..., None, None] * model.no_obj_embed_spatial[..., None, None]
        if self._pos_enc is None:
            self._pos_enc = [x[0:1].clone() for x in encoded["vision_pos_enc"]]
        # bfloat16 storage halves the memory, as SAM2's video predictor stores it.
        return MemoryEntry(frame_idx=frame_idx, maskmem_features=features.to(torch.bfloat16),
                           maskmem_pos_enc=self._pos_enc, obj_ptr=out["obj_ptr"], object_score_logits=score)

    def _cap_conditioning(self, track: ObjectTrack) -> None:
        """Keep the first and the newest conditioning frames; a dropped one that is still recent
        serves as a recent frame (as SAM2 uses conditioning frames it does not attend to)."""
        while len(track.cond) > self.max_cond_frames:
            order = sorted(track.cond)
            dropped = track.cond.pop(order[1])
            track.recent[dropped.frame_idx] = dropped

    def trim(self, track: ObjectTrack, frame_idx: int) -> None:
        """Drop what no step on ``frame_idx`` or later reads (for a kept copy of a track, e.g. for undo)."""
        self._prune(track, frame_idx)

    def _prune(self, track: ObjectTrack, frame_idx: int) -> None:
        """Drop what no step on this frame (a refining click) or a later one reads: pointers beyond the
        pointer window, memory features beyond the memory window."""
        keep_from = frame_idx - max(self.pointer_window, self.memory_window)
        features_from = frame_idx - self.memory_window
        for t in [t for t in track.recent if t < keep_from]:
            del track.recent[t]
        for t, entry in track.recent.items():
            if t < features_from:
                entry.maskmem_features = None
                entry.maskmem_pos_enc = None

    def _finish(self, track: ObjectTrack, frame_idx: int, frame: TrackerFrame, low_res: torch.Tensor,
                out: dict[str, torch.Tensor]) -> TrackResult:
        track.last_frame = frame_idx
        self._prune(track, frame_idx)
        low_res = low_res.float()
        logits = F.interpolate(low_res, frame.orig_hw, mode="bilinear", align_corners=False)[0, 0]
        scalars = torch.stack([out["object_score_logits"].float().reshape(-1)[0], out["iou"].float().reshape(-1)[0]])
        host = torch.cat([logits.reshape(-1), scalars]).cpu()  # one device-to-host copy for the object's results
        full = host[:-2].reshape(logits.shape).numpy()
        score, iou = float(host[-2]), float(host[-1])
        result = TrackResult(frame_idx=frame_idx, low_res=low_res, logits=full, object_score_logit=score,
                             iou=iou, present=score > 0, mask=full > 0)
        track.last_result = result
        return result
