"""The engine seam: every segmentation method (spectral, rgb, prompt, decoder) implements this.

The worker calls ``prepare`` once per frame (the place for work shared by every object,
such as SAM2's image embedding) and ``segment`` once per object on that frame. Engines that gain from
it (``batch_prepare``) get the frames of several streams at once through ``prepare_many`` first. Before
serving, the worker runs ``warm_up``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from ...errors import SamsaError
from ...protocol import CubeFrame
from ..prompts import Click, TrackedObject


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

    batch_prepare: bool = False  # whether ``prepare_many`` does better than one ``prepare`` per frame

    def prepare_many(self, frames: list[CubeFrame]) -> list[Ctx]:
        """``prepare`` of each frame (of different streams), in order; engines with ``batch_prepare`` share
        the work (e.g. one image-encoder run), and a later ``prepare`` of the same frame returns its context."""
        return [self.prepare(frame) for frame in frames]

    def warm_up(self, frames: int) -> int:
        """Run ``frames`` synthetic frames through the engine before it serves, so the first real frame pays
        no one-off cost (kernel selection, compilation); the number run. Default: none (nothing to warm)."""
        return 0

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


WARMUP_STREAM = "warm-up"


def synthetic_frames(count: int, height: int = 64, width: int = 64, bands: int = 16) -> list[CubeFrame]:
    """``count`` frames of one stream (``WARMUP_STREAM``): a smooth reflectance cube with a brighter square,
    its grey pseudo-RGB; what a warm-up runs through an engine."""
    wavelengths = np.linspace(500.0, 1000.0, bands)
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        inside = (abs(rows - height / 2) < height / 4) & (abs(cols - width / 2 - i) < width / 4)
        level = np.where(inside, 0.7, 0.3).astype(np.float32)
        cube = level[..., None] * np.linspace(0.8, 1.2, bands, dtype=np.float32)
        rgb = np.repeat((level * 255).astype(np.uint8)[..., None], 3, axis=2)
        frames.append(CubeFrame(stream_id=WARMUP_STREAM, frame_id=i, capture_ns=0, cube=cube,
                                wavelengths_nm=wavelengths, rgb=rgb))
    return frames


def run_synthetic(engine: Engine, count: int) -> int:
    """Run ``count`` synthetic frames through ``engine``: one object clicked at the centre of the first,
    then followed on the rest; the engine forgets the stream afterwards. The number of frames run."""
    frames = synthetic_frames(count)
    if not frames:
        return 0
    first = frames[0]
    h, w = first.cube.shape[:2]
    obj = TrackedObject(1, "warm-up", (255, 255, 255))
    obj.clicks.append(Click(x=w / 2, y=h / 2, positive=True, frame_id=first.frame_id,
                            reference=first.cube[h // 2, w // 2].astype(np.float32),
                            wavelengths_nm=first.wavelengths_nm))
    memory = ObjectMemory()
    try:
        for frame in frames:
            engine.segment(engine.prepare(frame), obj, memory)
    finally:
        engine.forget(WARMUP_STREAM)
    return len(frames)
