"""Frame sources: the synthetic phantom camera and replay of recorded captures."""

from __future__ import annotations

from ...settings import IngestSettings
from .base import Capture, Source, SourceError
from .phantom import PhantomCamera
from .replay import ReplaySource


def make_source(settings: IngestSettings) -> Source:
    """The source named by ``settings.source``: 'phantom' or a capture path."""
    if settings.source == "phantom":
        return PhantomCamera(settings.phantom, frames=settings.frames)
    return ReplaySource(settings.source, loop=settings.loop)


__all__ = ["Capture", "PhantomCamera", "ReplaySource", "Source", "SourceError", "make_source"]
