"""The ``prompt`` engine: training-free spectral-angle prompting of pretrained SAM2 (as in SAMSA 2.0).

The object's spectral similarity enters SAM2 only through inputs SAM2 already accepts:
- a dense mask prompt: the similarity mapped to logits, +scale at a perfect spectral match, 0 at
  ``worker.spectral.threshold_rad`` (the spectral engine's boundary), -scale from twice that angle
  on; on every tracked frame it is the dense prompt next to the object's memory, and a click that
  refines a frame adds it to the previous low-res logits;
- extra points on clicked frames (``worker.prompt``): positives deep inside the confidently similar region (angle
  <= threshold / 2) connected to the object, negatives in the confidently dissimilar region
  (angle >= 2 x threshold) nearest the object.
"""

from __future__ import annotations

import math

import torch

from ...settings import WorkerSettings
from .point_sampling import Point, nearest_to, regions_touching, spread_points
from .sam2_engine import PointPrompts, Sam2Context, Sam2Engine, SpectralMaps, clamp_logits
from .sam2_runner import Sam2Runner
from .sam2_tracker import Guidance


class PromptEngine(Sam2Engine):
    name = "prompt"
    uses_similarity = True

    def __init__(self, runner: Sam2Runner, settings: WorkerSettings) -> None:
        super().__init__(runner, settings)
        self.threshold_rad = settings.spectral.threshold_rad
        self.knobs = settings.prompt

    def grid_angle(self, maps: SpectralMaps) -> torch.Tensor:
        """Effective spectral angle (1, 1, S/4, S/4) of the combined similarity on the decoder's grid."""
        return (1.0 - self.runner.to_mask_grid(maps.similarity)) * (math.pi / 2)

    def spectral_logits(self, maps: SpectralMaps) -> torch.Tensor:
        """The similarity as a dense mask prompt (1, 1, S/4, S/4) in [-scale, +scale]."""
        theta = self.grid_angle(maps)
        return self.knobs.mask_logit_scale * ((self.threshold_rad - theta) / self.threshold_rad).clamp(-1.0, 1.0)

    def guidance(self, ctx: Sam2Context, maps: SpectralMaps | None) -> Guidance | None:
        return None if maps is None else Guidance(dense=self.spectral_logits(maps))

    def mask_prompt(self, ctx: Sam2Context, points: PointPrompts, previous: torch.Tensor | None,
                    maps: SpectralMaps | None) -> torch.Tensor | None:
        if maps is None:  # not reached: uses_similarity makes segment compute the maps
            return super().mask_prompt(ctx, points, previous, maps)
        logits = self.spectral_logits(maps)
        return logits if previous is None else clamp_logits(previous + logits)

    def extra_points(self, ctx: Sam2Context, points: PointPrompts, maps: SpectralMaps | None) -> None:
        n_pos, n_neg = self.knobs.extra_positive_points, self.knobs.extra_negative_points
        if maps is None or n_pos + n_neg == 0:
            return
        h, w = ctx.frame.cube.shape[:2]
        g = self.runner.mask_size
        theta = self.grid_angle(maps)[0, 0].float().cpu().numpy()
        to_grid = lambda x, y: (min(int(y * g / h), g - 1), min(int(x * g / w), g - 1))  # noqa: E731
        anchors = [to_grid(x, y) for (x, y), label in zip(points.coords, points.labels, strict=True) if label == 1]
        taken = [to_grid(x, y) for x, y in points.coords]
        confident = regions_touching(theta <= self.threshold_rad / 2, anchors)
        chosen: list[tuple[Point, int]] = [(p, 1) for p in spread_points(confident, n_pos, exclude=taken)]
        dissimilar = theta >= 2 * self.threshold_rad
        chosen += [(p, 0) for p in spread_points(dissimilar, n_neg, score=nearest_to(anchors, theta.shape),
                                                 exclude=taken)]
        for (row, col), label in chosen:  # grid cell centre -> original pixels
            points.add(float((col + 0.5) * w / g), float((row + 0.5) * h / g), label)

