"""Segmentation engines behind one interface; ``make_engine`` builds the one the settings name."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...settings import WorkerSettings
from .base import Engine, EngineError, FrameContext, ObjectMemory, Segmentation
from .spectral import SpectralEngine

log = logging.getLogger(__name__)



# The SAM2 engines import torch and sam2, so their modules load only when one is chosen.
def _rgb(settings: WorkerSettings) -> Engine:
    from .rgb import RgbEngine

    return RgbEngine.build(settings)


def _prompt(settings: WorkerSettings) -> Engine:
    from .prompt import PromptEngine

    return PromptEngine.build(settings)


def _decoder(settings: WorkerSettings) -> Engine:
    from .decoder import DecoderEngine

    return DecoderEngine.build(settings)


# name -> builder
BUILDERS: dict[str, Callable[[WorkerSettings], Engine]] = {
    "spectral": lambda s: SpectralEngine(s.spectral, click_window=s.frame_history),
    "rgb": _rgb,
    "prompt": _prompt,
    "decoder": _decoder,
}


def make_engine(settings: WorkerSettings) -> Engine:
    """The engine named by ``settings.engine``. A SAM2 engine with no checkpoint (and no explicit
    random weights) falls back to the spectral engine, with a notice on every display."""
    name = settings.engine
    notice = None
    if name != "spectral" and settings.checkpoint is None and not settings.random_weights:
        notice = (f"spectral engine only: engine {name!r} needs a SAM2 checkpoint (worker.checkpoint) and none "
                  "is configured")
        log.warning(notice)
        name = "spectral"
    if name not in BUILDERS:
        raise EngineError(f"engine {name!r} is not available (available: {', '.join(sorted(BUILDERS))})")
    engine = BUILDERS[name](settings)
    if notice:
        engine.notices = (*engine.notices, notice)
    return engine


__all__ = ["BUILDERS", "Engine", "EngineError", "FrameContext", "ObjectMemory", "Segmentation", "make_engine"]
