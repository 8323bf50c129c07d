"""What every frame source yields, and the interface sources implement."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ...errors import SamsaError


class SourceError(SamsaError, ValueError):
    """A capture that cannot be read; the text names the file or frame and what was expected."""


@dataclass
class Capture:
    """One frame as a source delivers it, before normalization (any dtype, any band count)."""

    cube: np.ndarray  # (H, W, B)
    wavelengths_nm: np.ndarray  # (B,)
    calibration: str = "reflectance"  # "reflectance" (ready) or "raw" (counts; see ingest.calibration)
    labels: np.ndarray | None = None  # optional (H, W) label map
    timestamp_ns: int | None = None  # when it was captured, for recorded-pace replay
    metadata: dict[str, Any] = field(default_factory=dict)
    # Raw captures: white and dark reference images (L, W, B), (W, B) or (B,), same bands as the cube.
    white: np.ndarray | None = None
    dark: np.ndarray | None = None


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
