"""Reference methods every evaluation compares against, next to the node's own engines.

``angle-mapper`` is the plain spectral-angle-mapper baseline: the angle of every pixel to the mean
of the positive clicks' pixel spectra (on later frames, the spectra the clicks recorded), one global
threshold (``worker.spectral.threshold_rad``), no connectivity, negative clicks ignored. RGB-only
SAM2 is the node's ``rgb`` engine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..settings import WorkerSettings
from ..spectral.angles import SpectralError
from ..worker.engines import BUILDERS, Engine, EngineError, ObjectMemory, Segmentation, make_engines
from ..worker.engines.spectral import SpectralContext, SpectralEngine
from ..worker.prompts import TrackedObject
from . import EvaluationError


class AngleMapper(SpectralEngine):
    """Spectral angle to the mean clicked spectrum, thresholded; shares the spectral engine's frame context."""

    name = "angle-mapper"

    def segment(self, ctx: SpectralContext, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        frame = ctx.frame
        cube = frame.cube
        h, w = cube.shape[:2]
        # The clicked pixel's spectrum on the clicked frame; on later frames (tracking) the spectrum the
        # click recorded, since the object has moved away from where it was clicked.
        spectra = [cube[min(max(round(c.y), 0), h - 1), min(max(round(c.x), 0), w - 1)]
                   if c.frame_id == frame.frame_id else c.reference_on(frame.wavelengths_nm) for c in obj.positives]
        mean = np.mean(np.asarray(spectra, dtype=np.float64), axis=0)
        try:
            theta = ctx.spectra.angles(mean[None].astype(np.float32))[..., 0]
        except SpectralError:  # the clicked pixels' mean spectrum is zero: nothing is similar to it
            empty = np.zeros((h, w), dtype=bool)
            return Segmentation(mask=empty, score=0.0)
        mask = theta <= self.settings.threshold_rad
        logits = (self.settings.threshold_rad - theta).astype(np.float32)
        return Segmentation(mask=mask, score=float(mask.mean()), logits=logits)


# name -> builder; the node's engines come from the worker's registry (BUILDERS)
BASELINES: dict[str, Callable[[WorkerSettings], Engine]] = {
    "angle-mapper": lambda settings: AngleMapper(settings.spectral, click_window=settings.frame_history),
}


def method_names() -> list[str]:
    """Every method an evaluation can run: the node's engines, then the baselines."""
    return [*BUILDERS, *BASELINES]


def build_methods(names: list[str], settings: WorkerSettings) -> dict[str, Engine]:
    """The methods ``names`` (engines share one SAM2 model); EvaluationError for an unknown name or a
    SAM2 engine without a checkpoint (no silent fallback: a report must say what it measured)."""
    unknown = [n for n in names if n not in BUILDERS and n not in BASELINES]
    if unknown:
        raise EvaluationError(f"unknown method(s) {', '.join(unknown)} (available: {', '.join(method_names())})")
    try:
        engines = make_engines([n for n in names if n in BUILDERS], settings)
    except EngineError as exc:
        raise EvaluationError(str(exc)) from None
    return {n: engines[n] if n in engines else BASELINES[n](settings) for n in names}
