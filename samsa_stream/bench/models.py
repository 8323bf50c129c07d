"""The engines against SAM2's own predictor, side by side on the same frames.

Per model (and with / without ``torch.compile`` where asked), in rotating order:
- predictor: bare ``SAM2ImagePredictor.set_image`` + ``predict`` (one positive click, multimask, logits);
- each engine, clicked: ``prepare`` on a new frame + ``segment`` of one object clicked on it;
- each engine, tracked: ``prepare`` on the next frame + ``segment`` of the object from its memory (the
  SAM2 tracker for the SAM2 engines);
- each engine, second object: one more object on a frame already prepared.
Then the predictor and the SAM2 engines again with one CPU-bound process beside them.
Speed only: random weights time the same as real ones (their masks mean nothing).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SamsaError
from ..protocol import CubeFrame
from ..worker.engines import Engine, ObjectMemory, make_engines, needs_sam2
from ..worker.prompts import Click, TrackedObject
from .contention import busy_processes
from .options import SAM2_ENGINES, BenchFrames, BenchOptions
from .report import Section, Timing
from .stats import interleaved, peak_rss_mib, ratio, summarize

TITLE = "SAM2 engines against the bare SAM2ImagePredictor"
HEADLINE = tuple(f"{name}_vs_predictor" for name in SAM2_ENGINES)


def tracked(frame: CubeFrame, object_id: int, x: float, y: float) -> TrackedObject:
    """An object with one positive click at column x, row y of ``frame`` (its spectrum as the worker takes it)."""
    ref = frame.cube[int(y), int(x)].astype(np.float32)
    return TrackedObject(object_id, f"object {object_id}", (255, 0, 0),
                         [Click(x, y, True, frame.frame_id, ref, np.asarray(frame.wavelengths_nm))])


class EngineCases:
    """The timed calls of one engine, each on a frame object it has not seen (so no embedding is reused)."""

    def __init__(self, engine: Engine, frames: BenchFrames) -> None:
        self.engine = engine
        self.frames = frames.frames
        self.centres = frames.centres
        self.ids = itertools.count(1)
        first = self.frames[0]
        self.obj = tracked(first, 1, *self.centres[0][0])
        self.second = tracked(first, 2, *self.centres[0][1])
        self.memory = ObjectMemory()
        self.prepared = engine.prepare(self._next(0))
        engine.segment(self.prepared, self.obj, self.memory)  # the clicked frame the tracked case goes on from
        self.k = 0

    def _next(self, k: int) -> CubeFrame:
        return dataclasses.replace(self.frames[k % len(self.frames)], frame_id=next(self.ids))

    def clicked(self) -> None:
        k = next(self.ids) % len(self.frames)
        frame = self._next(k)
        obj = tracked(frame, 1, *self.centres[k][0])
        self.engine.segment(self.engine.prepare(frame), obj, ObjectMemory())

    def tracked(self) -> None:
        self.k += 1
        self.engine.segment(self.engine.prepare(self._next(self.k)), self.obj, self.memory)

    def second_object(self) -> None:
        self.engine.segment(self.prepared, self.second, ObjectMemory())


def _predictor(runner: Any, frames: BenchFrames) -> Callable[[], None]:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(runner.model)
    s = runner.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # 1024's sizes are built in
    turn = itertools.cycle(range(len(frames.frames)))

    def run() -> None:
        k = next(turn)
        with runner.autocast():
            predictor.set_image(frames.frames[k].rgb)
            predictor.predict(np.array([frames.centres[k][0]], dtype=np.float32), np.array([1]),
                              multimask_output=True, return_logits=True)
    return run


def _variant(options: BenchOptions, frames: BenchFrames, config: str | None, checkpoint: Path | None,
             compiled: bool, headline: bool) -> Section:
    import torch

    names = [n for n in options.engines if n in ("spectral", *SAM2_ENGINES)]
    settings = options.worker_settings(names[0] if names else "rgb", config, checkpoint)
    if compiled:
        settings = settings.model_copy(update={"compile_image_encoder": True, "compile_memory_attention": True})
    engines = make_engines(names, settings)
    sam2 = [n for n in names if needs_sam2(n)]
    runner = getattr(engines[sam2[0]], "runner", None) if sam2 else None
    device = runner.device if runner is not None else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    per_engine = {name: EngineCases(engine, frames) for name, engine in engines.items()}
    calls: dict[str, Callable[[], object]] = {}
    if runner is not None:
        calls["predictor"] = _predictor(runner, frames)
    for name, cases in per_engine.items():
        calls[name] = cases.clicked
        calls[f"{name} tracked"] = cases.tracked
        calls[f"{name} second object"] = cases.second_object
    # Compiled modules compile on their first calls (and once more for a new shape): more untimed calls first.
    warmup = 3 if compiled else 1
    quiet = {name: summarize(t) for name, t in interleaved(calls, options.frames, warmup, sync).items()}
    contended_calls = {name: calls[name] for name in ("predictor", *sam2) if name in calls}
    with busy_processes(1):
        busy = {name: summarize(t) for name, t in interleaved(contended_calls, options.frames, sync=sync).items()}
    timings: dict[str, Timing] = dict(quiet)
    timings.update({f"{name} +1 busy": t for name, t in busy.items()})
    pred, pred_busy = quiet.get("predictor"), busy.get("predictor")
    suffix = "" if headline else f"@{config or 'default'}{'+compile' if compiled else ''}"
    ratios: dict[str, float | None] = {}
    for name in sam2:
        ratios[f"{name}_vs_predictor{suffix}"] = ratio(quiet[name].p50_ms, pred.p50_ms if pred else None)
        ratios[f"{name}_vs_predictor_busy1{suffix}"] = ratio(busy[name].p50_ms, pred_busy.p50_ms if pred_busy else None)
        ratios[f"{name}_tracked_vs_predictor{suffix}"] = ratio(quiet[f"{name} tracked"].p50_ms,
                                                              pred.p50_ms if pred else None)
    figures: dict[str, Any] = {"device": str(device), "process_peak_rss_mib": peak_rss_mib()}
    if runner is not None:
        figures.update({"model": runner.loaded.variant.name, "weights": runner.loaded.source,
                        "image_size": runner.image_size, "autocast": str(runner.loaded.autocast_dtype),
                        "compiled": compiled})
    if device.type == "cuda":
        for name, call in calls.items():
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            call()
            torch.cuda.synchronize()
            figures[f"cuda_peak_mib {name}"] = round((torch.cuda.max_memory_allocated(device) - held) / 2**20, 1)
        figures["cuda_reserved_mib"] = round(torch.cuda.memory_reserved(device) / 2**20, 1)
    h, w, b = options.size
    section = Section(
        title=TITLE + ("" if headline else f" ({figures.get('model', config)}{', compiled' if compiled else ''})"),
        description=(f"{h} x {w} x {b} phantom frames, {options.frames} timed calls per case in rotating order. "
                     "clicked: a new frame prepared and one object clicked on it; tracked: the next frame, the "
                     "object from its memory; second object: one more object on a prepared frame; '+1 busy': "
                     "with one CPU-bound process beside it."),
        timings=timings, figures=figures, ratios=ratios)
    if runner is not None and runner.loaded.random_weights:
        section.notes.append("random weights: the timings hold, the masks mean nothing")
    return section


def run(options: BenchOptions, frames: BenchFrames) -> dict[str, Section]:
    if not options.has_model:
        why = "no SAM2 model: pass --checkpoint PATH (an official SAM2/SAM2.1 checkpoint) or --random-weights"
        return {"models": Section.skip(TITLE, why, ratios=HEADLINE)}
    # Each checkpoint is a model (its config read from it); random weights take each config named.
    models: list[tuple[str | None, Path | None]]
    if options.checkpoint is not None:
        models = [(None, path) for path in (options.checkpoint, *options.more_checkpoints)]
    else:
        models = [(config, None) for config in (options.models or (None,))]
    out: dict[str, Section] = {}
    for i, ((config, checkpoint), compiled) in enumerate(itertools.product(models, options.compile)):
        name = checkpoint.stem if checkpoint is not None else (config or "default")
        key = "models" if i == 0 else f"models_{name}{'_compiled' if compiled else ''}"
        try:
            out[key] = _variant(options, frames, config, checkpoint, compiled, headline=i == 0)
        except SamsaError as exc:  # a model that does not load: the other variants still run
            out[key] = Section.skip(f"{TITLE} ({name}{', compiled' if compiled else ''})", f"failed: {exc}",
                                    ratios=HEADLINE if i == 0 else ())
    return out
