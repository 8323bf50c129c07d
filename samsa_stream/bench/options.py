"""What one ``bench`` run measures, and the frames every section shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SamsaError
from ..ingest.normalize import Normalizer
from ..ingest.sources.phantom import PhantomCamera
from ..protocol import CubeFrame
from ..settings import IngestSettings, PhantomSettings, Settings, WorkerSettings

FRAME_POOL = 4  # distinct frames the sections take in turn (a full-size cube is 117 MB)
SECTIONS = ("compute", "ingest", "models", "node")
SAM2_ENGINES = ("rgb", "prompt", "decoder")
TRANSPORTS = ("shm", "ipc", "tcp")


class BenchError(SamsaError, ValueError):
    """Benchmark options that cannot run; the text says which."""


@dataclass(frozen=True)
class BenchOptions:
    device: str = "cpu"  # cpu, cuda or auto
    size: tuple[int, int, int] = (480, 640, 100)  # H, W, bands
    engines: tuple[str, ...] = ("spectral", *SAM2_ENGINES)
    image_size: int = 1024
    frames: int = 20  # timed repeats per case, and frames measured per node run
    checkpoint: Path | None = None  # the node's model, and the models section's first
    more_checkpoints: tuple[Path, ...] = ()  # further checkpoints the models section times (e.g. tiny, then small)
    random_weights: bool = False
    seed: int = 0
    models: tuple[str, ...] = ()  # SAM2 configs to time (e.g. sam2.1_hiera_t); empty: the checkpoint's or tiny
    compile: tuple[bool, ...] = (False,)  # models section: without and/or with torch.compile
    sections: tuple[str, ...] = SECTIONS
    transports: tuple[str, ...] = TRANSPORTS
    fps: tuple[float, ...] = (5.0,)
    streams: tuple[int, ...] = (1, 4)
    contention: int = 2  # CPU-bound processes beside the contended cases
    clicks: int = 5  # click-to-mask samples per node run
    node_engine: str = "spectral"
    settings: Settings = field(default_factory=Settings)  # the node's settings (config file, --set) the run starts from

    def __post_init__(self) -> None:
        h, w, b = self.size
        if min(h, w) < 16 or b < 3:
            raise BenchError(f"--size {h}x{w}x{b}: frames must be at least 16 x 16 pixels with 3 bands")
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise BenchError(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
        bad = sorted(set(self.transports) - set(TRANSPORTS))
        if bad:
            raise BenchError(f"unknown transport(s) {', '.join(bad)} (known: {', '.join(TRANSPORTS)})")
        if self.frames < 2:
            raise BenchError(f"--frames {self.frames}: at least 2 frames per case")
        if any(n < 1 or n > 16 for n in self.streams):
            raise BenchError(f"--streams {self.streams}: each count must be 1 to 16")
        if any(f <= 0 or f > 200 for f in self.fps):
            raise BenchError(f"--fps {self.fps}: each rate must be above 0 and at most 200")
        if self.more_checkpoints and self.checkpoint is None:
            raise BenchError("more_checkpoints needs a first checkpoint")
        if self.checkpoint is not None and self.random_weights:
            raise BenchError("--checkpoint and --random-weights exclude each other")

    @property
    def has_model(self) -> bool:
        return self.checkpoint is not None or self.random_weights

    def describe(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        out["checkpoint"] = str(self.checkpoint) if self.checkpoint else None
        out["more_checkpoints"] = [str(p) for p in self.more_checkpoints]
        return out

    def worker_settings(self, engine: str, sam2_config: str | None = None,
                        checkpoint: Path | None = None) -> WorkerSettings:
        """The worker's settings for ``engine`` with this run's model (or ``checkpoint``), device and input size."""
        return self.settings.worker.model_copy(update={
            "engine": engine, "device": self.device, "image_size": self.image_size,
            "checkpoint": checkpoint or self.checkpoint,
            "random_weights": self.random_weights, "seed": self.seed,
            "sam2_config": sam2_config or self.settings.worker.sam2_config})


@dataclass
class BenchFrames:
    """Phantom frames through the real ingest normalizer, and where two of their objects are."""

    frames: list[CubeFrame]
    centres: list[list[tuple[float, float]]]  # per frame: object centres (x = column, y = row)
    phantom: PhantomSettings

    @classmethod
    def make(cls, size: tuple[int, int, int], count: int, stream_id: str = "bench") -> BenchFrames:
        h, w, b = size
        # A camera renders nothing on this machine: the node's phantom draws its few frames once and repeats them.
        phantom = PhantomSettings(height=h, width=w, bands=b, objects=2, noise=0.01, noise_bank=True,
                                  loop_frames=FRAME_POOL)
        camera = PhantomCamera(phantom)
        normalizer = Normalizer(IngestSettings())
        frames = [normalizer(camera.render(i), stream_id, i, 0) for i in range(count)]
        centres = [[camera.centre(0, i), camera.centre(1, i)] for i in range(count)]
        return cls(frames, centres, phantom)
