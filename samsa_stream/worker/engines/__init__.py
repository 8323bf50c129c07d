"""Segmentation engines behind one interface; ``make_engine`` builds the one the settings name.

``BUILDERS`` is the one list of engines: the ``worker.engine`` setting is checked against it.
Every engine module loads only when its engine is built (the SAM2 ones import torch and sam2),
so checking a setting costs no more than this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Engine, EngineError, EngineMemory, FrameContext, ObjectMemory, Segmentation

if TYPE_CHECKING:  # settings import this registry to check worker.engine
    from ...settings import WorkerSettings
    from .sam2_runner import Sam2Runner

log = logging.getLogger(__name__)


class SharedModel:
    """The one SAM2 model of a set of engines: built on first use, then handed to every SAM2 engine
    made with it (so an evaluation comparing rgb, prompt and decoder loads and embeds once)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._runner: Sam2Runner | None = None

    def runner(self) -> Sam2Runner:
        if self._runner is None:
            from .sam2_model import load_sam2
            from .sam2_runner import Sam2Runner

            self._runner = Sam2Runner(load_sam2(self.settings))
        return self._runner


def _spectral(settings: WorkerSettings, model: SharedModel) -> Engine:
    from .spectral import SpectralEngine

    return SpectralEngine(settings.spectral, click_window=settings.frame_history)


def _rgb(settings: WorkerSettings, model: SharedModel) -> Engine:
    from .rgb import RgbEngine

    return RgbEngine(model.runner(), settings)


def _prompt(settings: WorkerSettings, model: SharedModel) -> Engine:
    from .prompt import PromptEngine

    return PromptEngine(model.runner(), settings)


def _decoder(settings: WorkerSettings, model: SharedModel) -> Engine:
    from .decoder import DecoderEngine

    return DecoderEngine.with_adapter(model.runner(), settings)


# name -> builder
BUILDERS: dict[str, Callable[[WorkerSettings, SharedModel], Engine]] = {
    "spectral": _spectral,
    "rgb": _rgb,
    "prompt": _prompt,
    "decoder": _decoder,
}


def needs_sam2(name: str) -> bool:
    """Whether engine ``name`` runs SAM2 (and so needs a checkpoint or explicit random weights)."""
    return name != "spectral"


def make_engine(settings: WorkerSettings) -> Engine:
    """The engine named by ``settings.engine``. A SAM2 engine with no checkpoint (and no explicit
    random weights) falls back to the spectral engine, with a notice on every display."""
    name = settings.engine
    notice = None
    if needs_sam2(name) and settings.checkpoint is None and not settings.random_weights:
        notice = (f"spectral engine only: engine {name!r} needs a SAM2 checkpoint (worker.checkpoint) and none "
                  "is configured")
        log.warning(notice)
        name = "spectral"
    if name not in BUILDERS:
        raise EngineError(f"engine {name!r} is not available (available: {', '.join(sorted(BUILDERS))})")
    engine = BUILDERS[name](settings, SharedModel(settings))
    if notice:
        engine.notices = (*engine.notices, notice)
    return engine


def make_engines(names: list[str], settings: WorkerSettings) -> dict[str, Engine]:
    """Engines ``names`` built from one settings object, every SAM2 engine on one shared model.
    No fallback: a SAM2 engine without a checkpoint or explicit random weights is an EngineError."""
    model = SharedModel(settings)
    engines: dict[str, Engine] = {}
    for name in names:
        if name not in BUILDERS:
            raise EngineError(f"engine {name!r} is not available (available: {', '.join(sorted(BUILDERS))})")
        if needs_sam2(name) and settings.checkpoint is None and not settings.random_weights:
            raise EngineError(f"engine {name!r} needs a SAM2 checkpoint (--checkpoint PATH, an official SAM2/SAM2.1 "
                              "checkpoint) or, for tests only, --random-weights")
        engines[name] = BUILDERS[name](settings, model)
    return engines


__all__ = ["BUILDERS", "Engine", "EngineError", "EngineMemory", "FrameContext", "ObjectMemory", "Segmentation",
           "SharedModel", "make_engine", "make_engines", "needs_sam2"]
