"""The engine seam: every segmentation method (spectral, rgb, prompt, decoder) implements this.

The worker calls ``prepare`` once per frame (the place for work shared by every object,
such as SAM2's image embedding) and ``segment`` once per object on that frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from ...errors import SamsaError
from ...protocol import CubeFrame
from ..prompts import TrackedObject


class EngineError(SamsaError, RuntimeError):
    """An engine that cannot be built or run (missing checkpoint, unknown engine, ...)."""


@dataclass
class FrameContext:
    """What ``prepare`` computed for one frame; engines subclass it to add their own."""

    frame: CubeFrame


@dataclass
class Segmentation:
    mask: np.ndarray  # (H, W) bool
    score: float  # engine's confidence in [0, 1]
    similarity: np.ndarray | None = None  # (H, W) float32 spectral similarity the engine used
    logits: np.ndarray | None = None  # (H, W) float32 before thresholding, where the engine has them
    present: bool = True  # whether the engine judges the object in view (False: occluded or out of view)
    memory_frames: int = 0  # frames held in the object's memory after this frame (0: none kept)


@dataclass
class EngineMemory:
    """What one engine carries for one object from frame to frame; each engine subclasses it with its own fields."""

    def reanchored(self, restart: bool) -> EngineMemory | None:
        """What is kept when the object is re-anchored: after the stream restarted (``restart``) or a
        click on a frame older than the newest. Default: nothing (found from its clicks again)."""
        return None


@dataclass
class ObjectMemory:
    """Per stream and object state carried from frame to frame.

    ``last_mask`` is shared by every engine (the worker clears it to re-anchor an object on a
    new click or after a stream restart); ``engine`` holds the engine's own typed memory."""

    last_mask: np.ndarray | None = None
    engine: EngineMemory | None = None

    def clear_track(self, restart: bool = False) -> None:
        """Forget where the object was (the stream ``restart``-ed, or a click on an older frame re-anchors
        it): the next frame finds it from its clicks again, or from what its engine keeps (``reanchored``)."""
        self.last_mask = None
        self.engine = self.engine.reanchored(restart) if self.engine is not None else None


Ctx = TypeVar("Ctx", bound=FrameContext)


class Engine(ABC, Generic[Ctx]):
    """``Ctx`` is the engine's own FrameContext: what its ``prepare`` returns is what its ``segment`` takes."""

    name: str = "engine"
    notices: tuple[str, ...] = ()  # shown on every display (e.g. "random weights: masks are meaningless")
    keeps_memory: bool = False  # whether ``save_memory`` / ``load_memory`` carry objects' memory across restarts

    @abstractmethod
    def prepare(self, frame: CubeFrame) -> Ctx:
        """Per-frame work shared by every object on the frame."""

    @abstractmethod
    def segment(self, ctx: Ctx, obj: TrackedObject, memory: ObjectMemory) -> Segmentation:
        """One object's mask on the prepared frame; update ``memory`` for the next frame."""

    def forget(self, stream_id: str) -> None:
        """Let go of anything kept for ``stream_id`` (the worker dropped the stream or its frames)."""

    def memory_revision(self, memory: ObjectMemory) -> int | None:
        """A number that changes whenever ``save_memory`` would save something new for this object;
        None when this engine keeps nothing worth saving across a restart (the default)."""
        return None

    def save_memory(self, memory: ObjectMemory) -> bytes:
        """The object's memory as bytes for ``load_memory`` (EngineError when there is none)."""
        raise EngineError(f"engine {self.name!r} keeps no memory across restarts")

    def load_memory(self, data: bytes, obj: TrackedObject) -> EngineMemory:
        """The memory ``save_memory`` saved for ``obj``; EngineError naming what is wrong with ``data``."""
        raise EngineError(f"engine {self.name!r} keeps no memory across restarts")

    def context_key(self) -> object:
        """Engines with equal keys prepare the same context for a frame, so one ``prepare`` serves them
        all (e.g. every SAM2 engine on one model shares the image embedding)."""
        return self
