"""The node's one settings object.

Read once at start-up (config file < environment < command line) and passed down.
Environment variables are ``SAMSA_<SECTION>__<FIELD>``, e.g. ``SAMSA_WORKER__ENGINE=spectral``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .errors import SamsaError
from .protocol.fields import STREAM_ID_PATTERN

CONFIG_ENV = "SAMSA_CONFIG"
_config_file: ContextVar[Path | None] = ContextVar("samsa_config_file", default=None)
_ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")


class SettingsError(SamsaError, ValueError):
    """Invalid settings; the message names every offending field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_endpoint(value: str) -> str:
    if not value.startswith(_ENDPOINT_SCHEMES):
        raise ValueError(f"endpoint {value!r} must start with one of {', '.join(_ENDPOINT_SCHEMES)}")
    return value


def checked_list(value: Any, check: Callable[[Any], object]) -> Any:
    """A list setting: 'a, b' (from --set or the environment) -> ['a', 'b'], each item through ``check``
    (which raises ValueError for a bad one); anything but text or a list as it is, for pydantic to refuse."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        for item in value:
            check(item)
    return value


def _endpoint_item(item: Any) -> None:
    if not isinstance(item, str):
        raise ValueError(f"{item!r} is not an endpoint")
    _check_endpoint(item)


def _stream_item(item: Any) -> None:
    if not isinstance(item, str) or re.fullmatch(STREAM_ID_PATTERN.strip("^$"), item) is None:
        raise ValueError(f"{item!r} is not a stream id")


class Endpoints(_Section):
    """Where each link lives. The binding side may use ``tcp://*:PORT``; the connecting side
    needs a host name, so on a multi-host node each host sets its own value."""

    frames: str = "ipc:///tmp/samsa-stream/frames"  # ingest binds PUB, worker connects SUB
    prompts: str = "ipc:///tmp/samsa-stream/prompts"  # worker binds ROUTER, consoles connect DEALER
    results: str = "ipc:///tmp/samsa-stream/results"  # publisher binds PULL, worker connects PUSH
    broadcast: str = "ipc:///tmp/samsa-stream/broadcast"  # publisher binds XPUB, displays connect SUB
    frame_sources: list[str] = Field(default_factory=list, description=(
        "several cameras into one worker: the frame endpoints the worker connects to, one per camera's ingest "
        "(each binds its own endpoints.frames); empty: endpoints.frames. TOML list or 'ENDPOINT,ENDPOINT'"))
    prompts_by_stream: dict[str, str] = Field(default_factory=dict, description=(
        "several workers: the prompt endpoint of the worker that serves a stream (consoles use it for that "
        "stream; others go to endpoints.prompts); TOML table or 'cam0=ENDPOINT,cam1=ENDPOINT'"))

    @field_validator("frames", "prompts", "results", "broadcast")
    @classmethod
    def _scheme(cls, value: str) -> str:
        return _check_endpoint(value)

    @field_validator("frame_sources", mode="before")
    @classmethod
    def _endpoint_list(cls, value: Any) -> Any:
        return checked_list(value, _endpoint_item)

    @field_validator("prompts_by_stream", mode="before")
    @classmethod
    def _stream_endpoints(cls, value: Any) -> Any:
        if isinstance(value, str):  # from --set or the environment
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ValueError(f"expected STREAM=ENDPOINT[,STREAM=ENDPOINT...], got {value!r}")
            value = {stream.strip(): endpoint.strip() for stream, _, endpoint in pairs}
        if isinstance(value, dict):
            for stream, endpoint in value.items():
                if not isinstance(stream, str) or re.fullmatch(STREAM_ID_PATTERN.strip("^$"), stream) is None:
                    raise ValueError(f"{stream!r} is not a stream id")
                _check_endpoint(endpoint)
        return value

    def frames_in(self) -> list[str]:
        """The frame endpoints a worker connects to."""
        return list(self.frame_sources) or [self.frames]

    def prompts_for(self, stream_id: str) -> str:
        """The prompt endpoint of the worker that serves ``stream_id``."""
        return self.prompts_by_stream.get(stream_id, self.prompts)


class SocketSettings(_Section):
    frames_hwm: int = Field(2, ge=1, description="high-water mark (messages) on the frame link")
    results_hwm: int = Field(4, ge=1)
    broadcast_hwm: int = Field(8, ge=1, description="per-display send buffer; a slow display loses messages past this")
    prompts_hwm: int = Field(100, ge=1)
    linger_ms: int = Field(0, ge=0, description="how long a closing socket may flush pending messages")
    reply_timeout_ms: int = Field(3000, ge=1, description="how long a console waits for a prompt reply")
    poll_ms: int = Field(100, ge=1, description="idle poll interval of process loops")
    max_message_bytes: int = Field(2**31 - 1, ge=1024, description="larger inbound messages are refused by ZeroMQ")
    shared_memory: Literal["auto", "on", "off"] = Field("auto", description=(
        "cubes through shared-memory slots, only descriptors on the socket; auto = on for ipc:// and inproc://, "
        "'on' with a tcp:// frame link is refused (descriptors are accepted on same-host links only)"))
    shm_slots: int = Field(4, ge=3, le=256, description=(
        "ring size per camera; the slot a worker is segmenting is leased and skipped, so 3 always leaves the "
        "camera a free slot; each slot is allocated the first time it is written"))


class SecuritySettings(_Section):
    """CurveZMQ for links that leave the host. Off by default (loopback / ipc only)."""

    curve: bool = False
    server_secret_key: Path | None = None  # .key_secret file of this node (zmq.auth format)
    server_public_key: Path | None = None  # clients: the node's public key
    client_secret_key: Path | None = None  # clients: their own key pair
    authorized_clients_dir: Path | None = Field(None, description=(
        "folder of the client public keys allowed to connect to the node; '*' (any key) is refused on "
        "non-loopback tcp endpoints"))
    allow_plain_prompts: bool = Field(False, description=(
        "let the prompt link bind a non-loopback tcp address without CurveZMQ (anyone on the network could then "
        "click); refused unless set"))

    @model_validator(mode="after")
    def _keys_present(self) -> SecuritySettings:
        if self.curve and self.server_secret_key is None and self.client_secret_key is None:
            raise ValueError("curve=true needs server_secret_key (node) or client_secret_key (console)")
        return self


class PhantomSettings(_Section):
    height: int = Field(120, ge=8, le=8192)
    width: int = Field(160, ge=8, le=8192)
    bands: int = Field(32, ge=1, le=4096)
    wavelength_min_nm: float = Field(450.0, gt=0)
    wavelength_max_nm: float = Field(950.0, gt=0)
    objects: int = Field(2, ge=1, le=8, description="moving tissue objects on the background")
    noise: float = Field(0.01, ge=0, le=0.5, description="std-dev of additive reflectance noise")
    loop_frames: int = Field(0, ge=0, le=64, description=(
        "render frames 0..N-1 once and repeat them (frame k shows frame k mod N): a camera that costs no "
        "computing beside the node, for benchmarks; 0 = every frame rendered anew"))
    noise_bank: bool = Field(False, description=(
        "draw the noise once and give each frame a window of it at its own offset: a 480 x 640 x 100 frame in "
        "about 70 ms instead of 400 (default: each frame's noise drawn anew, the frames evaluations were made with)"))
    variability: float = Field(0.3, ge=0, le=1, description="within-object spectral variation (0 = uniform tissue)")
    motion_px: float = Field(1.5, ge=0, description="object speed in pixels per frame")
    seed: int = 0
    away_every: int = Field(0, ge=0, description=(
        "object 1 leaves the view on frames away_every, 2*away_every, ... and returns; it slides out "
        "across the image border nearest to it and back the same way (0 = off: it never leaves)"))
    away_frames: int = Field(8, ge=1, description=(
        "frames each excursion lasts, sliding out and back included (about a third of them each way); "
        "the object is wholly out of view for the middle frames; less than away_every"))

    @model_validator(mode="after")
    def _range(self) -> PhantomSettings:
        if self.wavelength_max_nm <= self.wavelength_min_nm:
            raise ValueError("wavelength_max_nm must be greater than wavelength_min_nm")
        if self.away_every > 0 and self.away_frames >= self.away_every:
            raise ValueError(f"away_frames ({self.away_frames}) must be less than away_every "
                             f"({self.away_every}), so the object is back in view between excursions")
        return self


class WavelengthGrid(_Section):
    """A regular wavelength grid (nm) every capture is resampled onto: start, start + step, ... <= stop."""

    start_nm: float = Field(gt=0)
    stop_nm: float = Field(gt=0)
    step_nm: float = Field(gt=0)

    @model_validator(mode="after")
    def _range(self) -> WavelengthGrid:
        if self.stop_nm < self.start_nm:
            raise ValueError("stop_nm must not be below start_nm")
        return self


class IngestSettings(_Section):
    source: str = Field("phantom", description=(
        "'phantom', 'plugin:NAME' (a camera driver plugin) or a path to a capture file or folder"))
    stream_id: str = Field("cam0", pattern=STREAM_ID_PATTERN)
    fps: float = Field(10.0, gt=0, le=1000, description="pace of phantom and 'fixed' replay")
    frames: int = Field(0, ge=0, description="stop after this many frames (0 = run until stopped)")
    pace: Literal["fixed", "recorded", "fast"] = "fixed"
    loop: bool = Field(False, description="restart a replay at its end")
    dtype: Literal["float32", "float16"] = "float32"
    rgb_exposure: Literal["fixed", "frame"] = Field("fixed", description="pseudo-RGB gain per stream or per frame")
    rgb_gain: float = Field(1.0, gt=0, le=100, description="fixed exposure: reflectance 1/gain renders white")
    tivita_wavelength_range_nm: tuple[float, float] = Field((500.0, 1000.0), description=(
        "TIVITA .dat files store no wavelengths: bands are spread evenly over this range (first, last band)"))
    band_range_nm: tuple[float, float] | None = Field(None, description="keep only bands inside [lo, hi] nm")
    wavelength_grid: WavelengthGrid | None = Field(None, description="resample every capture onto this grid")
    spatial_binning: int = Field(1, ge=1, le=64, description="average k x k pixel blocks (1 = off)")
    white_reflectance: float = Field(1.0, gt=0, le=1, description="reflectance of the white reference panel")
    white_reference: Path | None = Field(None, description=(
        "white reference capture for raw sources that bring none (averaged over its lines)"))
    dark_reference: Path | None = Field(None, description="dark reference capture, as white_reference")
    raw_counts: Literal["refuse", "scale"] = Field("refuse", description=(
        "raw counts without white/dark references: 'refuse' them, or 'scale' them to [0, 1] by their dtype's "
        "range (uncalibrated: frames are marked 'scaled_counts'; spectral angles hold, reflectance does not)"))
    plugin_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="options handed to the camera plugin named in source")
    watch: bool = Field(False, description="source is a folder: ingest each new capture written into it")
    watch_poll_s: float = Field(0.5, gt=0, le=60, description="how often the watched folder is listed")
    watch_settle_s: float = Field(1.0, ge=0, le=600, description=(
        "a new file is read once its size has not changed for this long (the camera finished writing)"))
    watch_existing: bool = Field(False, description="also ingest captures already in the folder at start")
    phantom: PhantomSettings = PhantomSettings()

    @field_validator("tivita_wavelength_range_nm", "band_range_nm", mode="before")
    @classmethod
    def _pair_from_text(cls, value: Any) -> Any:
        # --set passes text: accept "500,1000" or "[500, 1000]" (an empty value clears band_range_nm).
        if isinstance(value, str):
            parts = [p.strip() for p in value.strip().strip("[]()").split(",") if p.strip()]
            return tuple(parts) if parts else None
        return value

    @model_validator(mode="after")
    def _ranges(self) -> IngestSettings:
        for name in ("tivita_wavelength_range_nm", "band_range_nm"):
            value = getattr(self, name)
            if value is not None and not 0 < value[0] < value[1]:
                raise ValueError(f"{name} must be (lo, hi) with 0 < lo < hi nm, got {value}")
        if (self.white_reference is None) != (self.dark_reference is None):
            raise ValueError("white_reference and dark_reference go together: set both or neither")
        return self


class SpectralEngineSettings(_Section):
    threshold_rad: float = Field(0.10, gt=0, lt=3.1416, description=(
        "max spectral angle to a positive reference where the camera noise allows no less"))
    noise_factor: float = Field(2.0, ge=0, le=10, description=(
        "the threshold is at least this multiple of the angle sensor noise alone puts between a pixel and a "
        "reference (estimated per frame; dark, noisy pixels get a wider threshold); 0 = threshold_rad everywhere"))
    reference_radius: int = Field(2, ge=0, le=50, description=(
        "clicked neighbourhood (pixels) whose pixels of the clicked material are averaged into a reference"))
    min_area_px: int = Field(4, ge=0, description="regions smaller than this are dropped unless they hold a click")


class PromptEngineSettings(_Section):
    """Training-free spectral prompting of SAM2 (engine 'prompt'); see docs/engines.md for the defaults' reasons."""

    mask_logit_scale: float = Field(10.0, gt=0, le=32, description=(
        "dense mask prompt logit at a perfect spectral match; 0 at worker.spectral.threshold_rad, "
        "-scale from twice the threshold on (10 = SAM2's own logit for a given binary mask)"))
    extra_positive_points: int = Field(1, ge=0, le=8, description=(
        "points added where the spectrum is confidently similar (angle <= threshold/2), connected to the object"))
    extra_negative_points: int = Field(1, ge=0, le=8, description=(
        "points added where the spectrum is confidently dissimilar (angle >= 2 x threshold), nearest the object"))


class WorkerSettings(_Section):
    engine: str = Field("spectral", description="segmentation engine, one of the registry's (worker.engines.BUILDERS)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint: Path | None = None
    random_weights: bool = Field(False, description="tests only: SAM2 with seeded random weights")
    seed: int = 0
    frame_history: int = Field(4, ge=1, le=64, description="recent frames kept per stream for late clicks")
    state_file: Path | None = Field(None, description=(
        "prompt state persisted here, reloaded on restart; SAM2 engines keep each object's memory next to it, "
        "in the folder <state_file>.tracks"))
    track_save_interval_s: float = Field(1.0, ge=0, le=3600, description=(
        "an object's SAM2 memory is saved after its clicks change, at most this often per object"))
    max_cond_frames: int = Field(4, ge=2, le=64, description=(
        "SAM2 engines: clicked (conditioning) frames kept per object; the first and the newest stay"))
    streams: list[str] = Field(default_factory=list, description=(
        "several workers: the streams this worker serves (it subscribes to their frames only and refuses prompts "
        "for others); empty: every stream. TOML list or 'cam0,cam1'"))
    max_streams: int = Field(32, ge=1, le=1024, description=(
        "streams kept at once; a new stream beyond this evicts the least recently seen one (counted)"))
    stream_idle_s: float = Field(3600.0, ge=0, description=(
        "a stream without frames or prompt changes this long lets go of its frames; one without objects is "
        "forgotten (0 = never)"))
    spectral: SpectralEngineSettings = SpectralEngineSettings()
    sam2_config: str | None = Field(None, description=(
        "SAM2 model config, e.g. 'sam2.1_hiera_t' or a YAML path; default: chosen from the checkpoint"))
    image_size: int = Field(1024, ge=64, le=4096, multiple_of=32, description=(
        "SAM2 input size (square); official weights are trained at 1024, smaller sizes are for tests"))
    adapter: Path | None = Field(None, description="engine 'decoder': fusion adapter weights (.safetensors or .pt)")
    prompt: PromptEngineSettings = PromptEngineSettings()
    batch_streams: int = Field(4, ge=1, le=16, description=(
        "SAM2 engines: frames of this many streams that are ready together go through the image encoder as one "
        "batch (1 = one frame at a time)"))
    warmup_frames: int = Field(1, ge=0, le=64, description=(
        "synthetic frames run through the engine before the worker reports ready, so the first real frame pays "
        "no kernel selection or compilation (0 = none)"))
    compile_image_encoder: bool = Field(False, description="SAM2 engines: torch.compile the image encoder")
    compile_memory_attention: bool = Field(False, description="SAM2 engines: torch.compile the memory attention")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description=("torch.compile mode (inductor backend); 'reduce-overhead' adds CUDA graphs, which "
                                "fit the image encoder's static input size"))
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field("inductor", description=(
        "torch.compile backend; 'eager' only checks that compilation is wired (tests)"))

    @field_validator("streams", mode="before")
    @classmethod
    def _stream_list(cls, value: Any) -> Any:
        return checked_list(value, _stream_item)

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, value: str) -> str:
        from .worker.engines import BUILDERS  # the registry is the one list; late: engine modules import settings

        if value not in BUILDERS:
            raise ValueError(f"engine {value!r} is not available (available: {', '.join(sorted(BUILDERS))})")
        return value


class PublisherSettings(_Section):
    overlay_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)
    overlay_alpha: float = Field(0.45, ge=0, le=1)
    overlay_every: int = Field(1, ge=1, description="render an overlay every N results (masks go out every time)")
    replay_min_interval_ms: int = Field(500, ge=0, le=60_000, description=(
        "at most one last-value replay per subscription prefix this often; a subscription that comes sooner "
        "is answered by one replay when the interval is over"))
    replay_max_per_s: int = Field(20, ge=1, le=10_000, description="at most this many last-value replays per second")


class ViewSettings(_Section):
    stream_id: str = Field("cam0", pattern=STREAM_ID_PATTERN)
    headless: bool = False
    out: Path | None = None
    max_pngs: int = Field(1000, ge=0, description="headless: stop writing overlay PNGs after this many")


class DisplaySettings(_Section):
    """What every display (window, headless PNGs, web page, OpenIGTLink bridge) shares."""

    stale_after_s: float = Field(1.0, gt=0, le=3600, description=(
        "a stream whose newest mask is older than this is shown as stale on every display (worker stalled, "
        "camera stopped), never as live"))


class WebSettings(_Section):
    """The browser display (``samsa-stream web``)."""

    host: str = Field("127.0.0.1", description="address to listen on; loopback unless set (e.g. 0.0.0.0)")
    port: int = Field(8080, ge=1, le=65535)
    stream_id: str = Field("cam0", pattern=STREAM_ID_PATTERN, description="the stream a page shows first")
    token: str | None = Field(None, min_length=16, description=(
        "required to send prompts from a page (and to view it with web.view_requires_token); none: prompts "
        "only from web.allow_prompts_from"))
    view_requires_token: bool = Field(False, description="the page itself needs the token too")
    allow_prompts_from: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"], description=(
        "client networks (CIDR) that may send prompts without a token"))
    max_fps: float = Field(15.0, gt=0, le=120, description="frames sent to one browser per second at most")


class IgtlSettings(_Section):
    """The OpenIGTLink bridge (``samsa-stream igtl``) for navigation systems such as 3D Slicer."""

    port: int = Field(18944, ge=1, le=65535)
    local_only: bool = Field(True, description="listen on loopback only; false: every interface")
    stream_id: str = Field("cam0", pattern=STREAM_ID_PATTERN)
    label_device: str = Field("SamsaLabels", min_length=1, max_length=20, description=(
        "OpenIGTLink device name of the label map (uint8, one value per object)"))
    overlay_device: str = Field("SamsaOverlay", min_length=1, max_length=20, description=(
        "device name of the RGB overlay image"))
    send_overlay: bool = Field(False, description="also send the RGB overlay")
    spacing_mm: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description=(
        "pixel spacing (column, row, slice) in mm; a negative value flips that axis (e.g. [-s, -s, 1] shows "
        "the camera image upright in Slicer's axial view)"))
    origin_mm: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="image origin (x, y, z) in mm")

    @field_validator("spacing_mm")
    @classmethod
    def _nonzero_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not math.isfinite(v) or v == 0 for v in value):
            raise ValueError(f"every spacing must be a finite, non-zero number of mm, got {list(value)}")
        return value


class RecordSettings(_Section):
    """The session recorder (``samsa-stream record``, docs/recording.md)."""

    compression: Literal["none", "lz4", "zstd"] = Field("none", description=(
        "chunk compression: none while live (lz4 saves about 1 % on cubes for about 30 % more CPU; "
        "benchmarks/bench_record.py), zstd for archiving"))
    chunk_bytes: int = Field(4 * 2**20, ge=2**16, le=2**31, description=(
        "MCAP chunk size: the most a crash can lose besides the message being written"))
    fsync: bool = Field(False, description="sync every chunk to disk (survives a power loss; a flush per chunk)")
    max_bytes: int = Field(0, ge=0, description="roll over to the next file before one grows past this (0 = never)")
    max_seconds: float = Field(0.0, ge=0, description="roll over to the next file after this long (0 = never)")
    cube_every: int = Field(1, ge=1, le=10_000, description="record every Nth frame of each stream (1 = all)")
    cube_dtype: Literal["float32", "float16"] | None = Field(None, description=(
        "store cubes as this type (none: as the node sends them; float16 halves the bytes)"))
    queue_bytes: int = Field(512 * 2**20, ge=1, description=(
        "cubes waiting for the disk before new ones are dropped and counted"))
    queue_messages: int = Field(1000, ge=1, description="other messages waiting for the disk before drops")


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    stats_interval_s: float = Field(10.0, gt=0)
    format: Literal["text", "json"] = Field("text", description=(
        "text: one readable line per event; json: one JSON object per line (journald, ELK)"))


class MetricsSettings(_Section):
    """Prometheus metrics of every process (``samsa_*``), off unless ``listen`` is set."""

    listen: str | None = Field(None, description=(
        "HOST:PORT to serve /metrics on (e.g. 127.0.0.1:9811); each process of a host needs its own port"))

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"metrics.listen must be HOST:PORT, e.g. 127.0.0.1:9811, got {value!r}")
        return value


class ThreadSettings(_Section):
    """Threads each process computes with; 0 = sized from the cores this process may use (docs/performance.md).

    Idle threads sleep after a short spin, BLAS runs one thread per call and the large per-frame products
    (spectral angles, pseudo-RGB, layout conversion) are split into blocks over the process's own pool, so
    processes sharing a small box take turns instead of fighting."""

    ingest: int = Field(0, ge=0, le=256, description="ingest process (0: a quarter of the cores, at least 2)")
    worker: int = Field(0, ge=0, le=256, description="worker process (0: every core)")
    publisher: int = Field(0, ge=0, le=256, description="publisher and display bridges (0: 1)")
    tools: int = Field(0, ge=0, le=256, description="every other command: segment, eval, bench ... (0: every core)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAMSA_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    endpoints: Endpoints = Endpoints()
    sockets: SocketSettings = SocketSettings()
    security: SecuritySettings = SecuritySettings()
    ingest: IngestSettings = IngestSettings()
    worker: WorkerSettings = WorkerSettings()
    publisher: PublisherSettings = PublisherSettings()
    view: ViewSettings = ViewSettings()
    display: DisplaySettings = DisplaySettings()
    web: WebSettings = WebSettings()
    igtl: IgtlSettings = IgtlSettings()
    record: RecordSettings = RecordSettings()
    metrics: MetricsSettings = MetricsSettings()
    threads: ThreadSettings = ThreadSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def parse_assignment(text: str) -> dict[str, Any]:
    """``'worker.spectral.threshold_rad=0.2'`` -> nested dict for an override layer."""
    key, sep, value = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not sep or not parts:
        raise SettingsError(f"--set expects SECTION.FIELD=VALUE, got {text!r}")
    out: dict[str, Any] = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Nested dict union; ``top`` wins."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings: defaults < config file (TOML) < SAMSA_ environment < overrides.

    The config file is ``config_file`` or else the one named by $SAMSA_CONFIG.
    Raises SettingsError naming each invalid field.
    """
    config_file = config_file or os.environ.get(CONFIG_ENV)
    path = Path(config_file) if config_file else None
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {path} cannot be read ({exc})") from None
    token = _config_file.set(path)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(settings)"
            problems.append(f"  {field}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n" + "\n".join(problems)) from None
    finally:
        _config_file.reset(token)
