"""The interface every frame source implements (``Capture`` and ``SourceError`` live in ingest.capture)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from ..capture import Capture, SourceError


class Source(ABC):
    """A camera, a recording or a generator of captures."""

    name: str = "source"

    @abstractmethod
    def captures(self) -> Iterator[Capture | SourceError]:
        """Yield captures in order; a live source never ends, a recording ends at its last frame.

        A capture that cannot be read is yielded as its SourceError, and the source goes on."""

    def close(self) -> None:
        """Release the camera or files."""

    def describe(self) -> dict[str, Any]:
        return {"source": self.name}


__all__ = ["Capture", "Source", "SourceError"]
