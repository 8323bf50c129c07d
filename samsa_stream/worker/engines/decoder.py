"""The ``decoder`` engine: SAMSA's learned late fusion inside SAM2's mask decoder.

Prompts and memory are the rgb engine's; in addition, on every clicked and tracked frame, the
object's positive and negative similarity maps go through the fusion adapter, whose output is
added to the decoder's high-resolution skip features (1/4 and 1/8 of the input size) before the
installed sam2 mask decoder runs. With an untrained (zero-initialized) adapter the result equals
the rgb engine's exactly.
"""

from __future__ import annotations

import torch

from ...settings import WorkerSettings
from .base import EngineError
from .fusion_adapter import FusionAdapter, load_adapter
from .sam2_engine import Sam2Context, Sam2Engine, SpectralMaps
from .sam2_model import load_sam2
from .sam2_runner import Sam2Runner
from .sam2_tracker import Guidance


class DecoderEngine(Sam2Engine):
    name = "decoder"
    uses_similarity = True

    def __init__(self, runner: Sam2Runner, settings: WorkerSettings, adapter: FusionAdapter | None = None) -> None:
        super().__init__(runner, settings)
        if adapter is None:
            self.notices = (*self.notices,
                            "decoder adapter is untrained (no worker.adapter): masks equal the rgb engine's")
            adapter = FusionAdapter(runner.high_res_channels)
        if adapter.channels != runner.high_res_channels:
            raise EngineError(f"adapter outputs {adapter.channels} channels; the model's skip features have "
                             f"{runner.high_res_channels}")
        self.adapter = adapter.to(runner.device).eval()

    @classmethod
    def build(cls, settings: WorkerSettings) -> DecoderEngine:
        return cls.with_adapter(Sam2Runner(load_sam2(settings)), settings)

    @classmethod
    def with_adapter(cls, runner: Sam2Runner, settings: WorkerSettings) -> DecoderEngine:
        """The engine on ``runner`` with the adapter ``worker.adapter`` names (untrained when none)."""
        adapter = None
        if settings.adapter is not None:
            adapter = load_adapter(settings.adapter, runner.loaded.variant.name, runner.high_res_channels)
        return cls(runner, settings, adapter)

    def adapter_input(self, maps: SpectralMaps) -> torch.Tensor:
        """(1, 2, S/4, S/4): positive and negative similarity (zeros without negative clicks) on the decoder grid."""
        positive = self.runner.to_mask_grid(maps.positive)
        negative = torch.zeros_like(positive) if maps.negative is None else self.runner.to_mask_grid(maps.negative)
        return torch.cat([positive, negative], dim=1)

    def guidance(self, ctx: Sam2Context, maps: SpectralMaps | None) -> Guidance | None:
        delta = self.high_res_delta(ctx, maps)
        return None if delta is None else Guidance(high_res_delta=delta)

    def high_res_delta(self, ctx: Sam2Context, maps: SpectralMaps | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if maps is None:
            return None
        with self.runner.autocast():
            return self.adapter(self.adapter_input(maps))
