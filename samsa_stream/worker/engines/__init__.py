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

log = logging.getLogger(__name__)


def _spectral(settings: WorkerSettings) -> Engine:
    from .spectral import SpectralEngine

    return SpectralEngine(settings.spectral, click_window=settings.frame_history)


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
    "spectral": _spectral,
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


__all__ = ["BUILDERS", "Engine", "EngineError", "EngineMemory", "FrameContext", "ObjectMemory", "Segmentation",
           "make_engine"]
