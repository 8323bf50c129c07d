"""The message model: what the bytes mean. Transport (sockets, topics) lives elsewhere.

Each message converts to and from the codec's (header, arrays) pair; ``from_parts``
validates every field a receiver relies on (type and range) and raises ProtocolError
naming the problem, so no malformed message gets further than its decoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import msgpack
import numpy as np

from .. import threads
from ..errors import ProtocolError
from . import fields as f
from .codec import INT64_MAX, decode, encode
from .masks import rle_decode, rle_encode

CUBE_DTYPES = (np.dtype("<f4"), np.dtype("<f2"))
MAX_SIDE = 32768  # pixels per image side a receiver accepts
MAX_PIXELS = 1 << 28
MAX_MASK_PIXELS = MAX_PIXELS  # decoded mask pixels of one broadcast, every object together (a few bytes of run
# lengths declare a whole mask, so without this bound 256 objects could ask a display for 64 GiB)
MAX_OBJECT_ID = 2**31 - 1


def _array(arrays: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in arrays:
        raise ProtocolError(f"{what}: array {name!r} is missing")
    return arrays[name]


def _stream_fields(header: dict[str, Any], what: str) -> tuple[str, int, int, list[list[Any]]]:
    return (f.stream(header, what), f.integer(header, "frame_id", what), f.integer(header, "capture_ns", what),
            f.hops(header, what))


def _size(header: dict[str, Any], what: str) -> tuple[int, int]:
    """The header's ``size``: [H, W], positive integers within the limits."""
    size = header.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(n) is int for n in size)):
        raise ProtocolError(f"{what}: 'size' must be [H, W] with positive integers, got {size!r:.80}")
    _check_size(size[0], size[1], what)
    return size[0], size[1]


def _check_size(h: int, w: int, what: str) -> None:
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise ProtocolError(f"{what}: image size {h} x {w} is outside 1..{MAX_SIDE} per side "
                            f"(at most {MAX_PIXELS} pixels)")


def check_cube(cube: np.ndarray, wavelengths_nm: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None = None,
               what: str = "frame") -> None:
    """Raise ProtocolError unless the cube, wavelengths, pseudo-RGB and label map agree (DESIGN section 3)."""
    if cube.ndim != 3 or min(cube.shape) < 1:
        raise ProtocolError(f"{what}: cube must be H x W x B with every side >= 1, got shape {cube.shape}")
    if cube.dtype not in CUBE_DTYPES:
        raise ProtocolError(f"{what}: cube dtype must be float32 or float16, got {cube.dtype}")
    h, w, b = cube.shape
    if wavelengths_nm.dtype.kind != "f":
        raise ProtocolError(f"{what}: wavelengths must be floating point (nm), got {wavelengths_nm.dtype}")
    if wavelengths_nm.shape != (b,):
        count = wavelengths_nm.shape[0] if wavelengths_nm.ndim == 1 else wavelengths_nm.shape
        raise ProtocolError(f"{what}: {count} wavelengths for {b} bands")
    if not np.all(np.isfinite(wavelengths_nm)) or (b > 1 and not np.all(np.diff(wavelengths_nm) > 0)):
        raise ProtocolError(f"{what}: wavelengths must be finite and strictly increasing")
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ProtocolError(f"{what}: rgb must be uint8 {h}x{w}x3, got {rgb.dtype} {rgb.shape}")
    if labels is not None and (labels.shape != (h, w) or labels.dtype.kind not in "iu"):
        raise ProtocolError(f"{what}: label map must be an integer {h}x{w} array, got {labels.dtype} {labels.shape}")
    bad = count_nonfinite(cube)
    if bad:
        raise ProtocolError(f"{what}: cube has {bad} NaN/inf value(s)")


_FINITE_BLOCK = 8192  # spectra per block of the float32 check (3 MB at 100 bands: in cache)


def count_nonfinite(cube: np.ndarray) -> int:
    """How many NaN/inf values ``cube`` holds."""
    # Sums are far cheaper than a full isfinite pass and are NaN/inf wherever a value is; only then (or where
    # a sum overflowed) is every value checked. A float32 cube's sums are one matrix-vector product with ones
    # per block of spectra, the blocks spread over the process's threads (a full-size frame in 2-3 ms).
    if cube.dtype == np.float32 and cube.ndim >= 2 and cube.flags.c_contiguous and cube.size:
        spectra = cube.reshape(-1, cube.shape[-1])
        ones = np.ones(spectra.shape[1], dtype=np.float32)
        finite = [True]

        def block(start: int, stop: int) -> None:
            with np.errstate(over="ignore", invalid="ignore"):
                sums = spectra[start:stop] @ ones
            if not np.isfinite(sums).all():
                finite[0] = False

        threads.map_blocks(block, spectra.shape[0], _FINITE_BLOCK)
        if finite[0]:
            return 0
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.add.reduce(cube, axis=None, dtype=np.float32)
        if np.isfinite(total):
            return 0
    return int(cube.size - np.count_nonzero(np.isfinite(cube)))


@dataclass
class CubeFrame:
    """One wavelength-tagged reflectance cube and its pseudo-RGB rendering."""

    TYPE: ClassVar[str] = "frame"
    stream_id: str
    frame_id: int
    capture_ns: int
    cube: np.ndarray  # (H, W, B) float32 or float16 reflectance
    wavelengths_nm: np.ndarray  # (B,) float64, strictly increasing
    rgb: np.ndarray  # (H, W, 3) uint8
    calibration: str = "reflectance"
    source: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None  # optional ground-truth label map (H, W) int32
    hops: list[list[Any]] = field(default_factory=list)
    cube_ref: dict[str, Any] | None = None  # where the cube lies when it came through shared memory

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.cube.shape

    def validate(self) -> CubeFrame:
        check_cube(self.cube, self.wavelengths_nm, self.rgb, self.labels,
                   what=f"frame {self.stream_id}#{self.frame_id}")
        return self

    def to_parts(self, cube_ref: dict[str, Any] | None = None) -> list[Any]:
        """Multipart parts; with ``cube_ref`` the cube stays out of the message (it lies in shared memory)."""
        arrays = {"cube": self.cube, "wavelengths_nm": np.asarray(self.wavelengths_nm, dtype=np.float64),
                  "rgb": self.rgb}
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(np.int32, copy=False)
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "calibration": self.calibration, "source": self.source}
        if cube_ref is not None:
            del arrays["cube"]
            header["cube_ref"] = cube_ref
        return encode(header, arrays)

    @classmethod
    def from_parts(cls, parts: list[Any],
                   resolve_cube: Callable[[dict[str, Any]], np.ndarray] | None = None) -> CubeFrame:
        """Decode and validate; ``resolve_cube`` maps a shared-memory ``cube_ref`` to the cube."""
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "frame")
        cube_ref = f.mapping(header, "cube_ref", "frame", default=None) if header.get("cube_ref") is not None else None
        if cube_ref is None:
            cube = _array(arrays, "cube", "frame")
        elif resolve_cube is None:
            raise ProtocolError("frame: the cube lies in shared memory (cube_ref) and this receiver cannot map it")
        else:
            cube = resolve_cube(cube_ref)
        frame = cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns,
                    cube=cube, wavelengths_nm=_array(arrays, "wavelengths_nm", "frame"),
                    rgb=_array(arrays, "rgb", "frame"),
                    calibration=f.text(header, "calibration", "frame", default="reflectance", max_len=64),
                    source=f.mapping(header, "source", "frame", default={}),
                    labels=arrays.get("labels"), hops=hops, cube_ref=cube_ref)
        return frame.validate()


@dataclass(kw_only=True)
class PromptRequest:
    """A console's request to the worker; one subclass per op (``OP``), each with only its own fields."""

    TYPE: ClassVar[str] = "prompt"
    OP: ClassVar[str] = ""
    request_id: int = 0

    def header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "op": self.OP, "request_id": self.request_id}

    def to_parts(self) -> list[Any]:
        return encode({k: v for k, v in self.header().items() if v is not None})

    @classmethod
    def from_header(cls, header: dict[str, Any], request_id: int) -> PromptRequest:
        return cls(request_id=request_id)

    @classmethod
    def from_parts(cls, parts: list[Any]) -> PromptRequest:
        """Any prompt request, as the subclass its ``op`` names (see ``decode_prompt``)."""
        request = decode_prompt(parts)
        if not isinstance(request, cls):
            raise ProtocolError(f"prompt: op {request.OP!r} where {cls.OP!r} was expected", request.request_id)
        return request


@dataclass(kw_only=True)
class StatusPrompt(PromptRequest):
    """The worker's counters, latencies and per-stream state; names no stream."""

    OP: ClassVar[str] = "status"


@dataclass(kw_only=True)
class StreamPrompt(PromptRequest):
    """A request about one stream."""

    stream_id: str

    def header(self) -> dict[str, Any]:
        return {**super().header(), "stream": self.stream_id}

    @classmethod
    def from_header(cls, header: dict[str, Any], request_id: int) -> PromptRequest:
        return cls(request_id=request_id, stream_id=f.stream(header, "prompt"))


@dataclass(kw_only=True)
class StatePrompt(StreamPrompt):
    """The stream's prompt state (read only: it never creates a stream)."""

    OP: ClassVar[str] = "state"


@dataclass(kw_only=True)
class ResetPrompt(StreamPrompt):
    """Delete every object of the stream."""

    OP: ClassVar[str] = "reset"


@dataclass(kw_only=True)
class UndoPrompt(StreamPrompt):
    """Remove the last click (of ``object_id`` when given)."""

    OP: ClassVar[str] = "undo"
    object_id: int | None = None

    def header(self) -> dict[str, Any]:
        return {**super().header(), "object_id": self.object_id}

    @classmethod
    def from_header(cls, header: dict[str, Any], request_id: int) -> PromptRequest:
        return cls(request_id=request_id, stream_id=f.stream(header, "prompt"),
                   object_id=f.integer(header, "object_id", "prompt", lo=1, hi=MAX_OBJECT_ID, default=None))


@dataclass(kw_only=True)
class RemovePrompt(StreamPrompt):
    """Delete one object."""

    OP: ClassVar[str] = "remove"
    object_id: int

    def header(self) -> dict[str, Any]:
        return {**super().header(), "object_id": self.object_id}

    @classmethod
    def from_header(cls, header: dict[str, Any], request_id: int) -> PromptRequest:
        if "object_id" not in header:
            raise ProtocolError("prompt: remove needs object_id", request_id)
        return cls(request_id=request_id, stream_id=f.stream(header, "prompt"),
                   object_id=f.integer(header, "object_id", "prompt", lo=1, hi=MAX_OBJECT_ID))


@dataclass(kw_only=True)
class ClickPrompt(StreamPrompt):
    """A positive or negative click on object ``object_id`` (a new id creates the object)."""

    OP: ClassVar[str] = "click"
    object_id: int
    x: float  # column, original image pixels
    y: float  # row
    positive: bool = True
    frame_id: int | None = None  # frame the user clicked on (defaults to the latest)
    label: str | None = None  # object name shown on displays

    def header(self) -> dict[str, Any]:
        return {**super().header(), "object_id": self.object_id, "x": self.x, "y": self.y, "positive": self.positive,
                "frame_id": self.frame_id, "label": self.label}

    @classmethod
    def from_header(cls, header: dict[str, Any], request_id: int) -> PromptRequest:
        missing = [n for n in ("object_id", "x", "y") if n not in header]
        if missing:
            raise ProtocolError(f"prompt: click needs {', '.join(missing)}", request_id)
        return cls(request_id=request_id, stream_id=f.stream(header, "prompt"),
                   object_id=f.integer(header, "object_id", "prompt", lo=1, hi=MAX_OBJECT_ID),
                   x=f.number(header, "x", "prompt"), y=f.number(header, "y", "prompt"),
                   positive=f.boolean(header, "positive", "prompt", default=True),
                   frame_id=f.integer(header, "frame_id", "prompt", default=None),
                   label=f.text(header, "label", "prompt", default=None, max_len=128))


PROMPTS: dict[str, type[PromptRequest]] = {
    cls.OP: cls for cls in (ClickPrompt, UndoPrompt, RemovePrompt, ResetPrompt, StatePrompt, StatusPrompt)}
PROMPT_OPS = tuple(PROMPTS)


def _readable_request_id(parts: list[Any]) -> int | None:
    """The request id of a prompt that failed to decode, when its header can still be read."""
    try:
        header = msgpack.unpackb(bytes(getattr(parts[0], "buffer", parts[0])), raw=False)
    except Exception:  # unreadable header: there is no id to echo
        return None
    value = header.get("request_id") if isinstance(header, dict) else None
    return value if type(value) is int and 0 <= value <= INT64_MAX else None


def decode_prompt(parts: list[Any]) -> PromptRequest:
    """A prompt request as the subclass its ``op`` names.

    Raises ProtocolError naming the problem; its ``request_id`` carries the request's id
    whenever that could be read, so the error reply reaches the waiting console."""
    try:
        header, _ = decode(parts, PromptRequest.TYPE)
        request_id = f.integer(header, "request_id", "prompt", default=0)
        op = f.text(header, "op", "prompt", max_len=32)
        kind = PROMPTS.get(op)
        if kind is None:
            raise ProtocolError(f"prompt: unknown op {op!r} (expected one of {', '.join(PROMPT_OPS)})")
        return kind.from_header(header, request_id)
    except ProtocolError as exc:
        if exc.request_id is None and parts:
            exc.request_id = _readable_request_id(parts)
        raise


@dataclass
class PromptReply:
    """The worker's answer to one request: applied or not, why not, and the resulting state."""

    TYPE: ClassVar[str] = "prompt_reply"
    request_id: int
    ok: bool
    error: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # applied, but something the operator must know

    def to_parts(self) -> list[Any]:
        return encode({"type": self.TYPE, "request_id": self.request_id, "ok": self.ok, "error": self.error,
                       "state": self.state, "warnings": self.warnings})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> PromptReply:
        header, _ = decode(parts, cls.TYPE)
        what = "prompt reply"
        return cls(request_id=f.integer(header, "request_id", what), ok=f.boolean(header, "ok", what),
                   error=f.text(header, "error", what, default=None),
                   state=f.mapping(header, "state", what, default={}),
                   warnings=f.texts(header, "warnings", what, default=[]))


@dataclass
class PromptEvent:
    """Worker -> publisher -> displays and recorders: one prompt request that changed (or tried to change)
    a stream's prompts, and what came of it. Queries (state, status) are not events. The worker sends
    it on the results link in order with its results, so a recording holds the session's clicks where
    they happened."""

    TYPE: ClassVar[str] = "prompt_event"
    stream_id: str
    request: dict[str, Any]  # the request's header as decoded (op, request_id and the op's fields)
    ok: bool
    error: str | None = None
    frame_id: int | None = None  # the frame it applied on: a click's frame as the worker resolved it, else the newest
    revision: int = 0  # the stream's prompt revision after it
    handled_ns: int = 0  # wall clock when the worker handled it
    seq: int = 0  # publisher: +1 per event of the stream (0 from the worker)
    publisher: str = ""  # the publisher run that numbered ``seq``

    def to_parts(self) -> list[Any]:
        return encode({"type": self.TYPE, "stream": self.stream_id, "request": self.request, "ok": self.ok,
                       "error": self.error, "frame_id": self.frame_id, "revision": self.revision,
                       "handled_ns": self.handled_ns, "seq": self.seq, "publisher": self.publisher})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> PromptEvent:
        header, _ = decode(parts, cls.TYPE)
        what = "prompt event"
        request = f.mapping(header, "request", what)
        f.text(request, "op", f"{what}: request", max_len=32)
        return cls(stream_id=f.stream(header, what), request=request, ok=f.boolean(header, "ok", what),
                   error=f.text(header, "error", what, default=None),
                   frame_id=f.integer(header, "frame_id", what, default=None),
                   revision=f.integer(header, "revision", what, default=0),
                   handled_ns=f.integer(header, "handled_ns", what, default=0),
                   seq=f.integer(header, "seq", what, default=0),
                   publisher=f.text(header, "publisher", what, default="", max_len=64))

    def prompt(self) -> PromptRequest:
        """The request to send again to reproduce the event (a click on the frame it applied on)."""
        header = {**self.request, "type": PromptRequest.TYPE, "stream": self.stream_id}
        if header.get("op") == ClickPrompt.OP and self.frame_id is not None:
            header["frame_id"] = self.frame_id
        return decode_prompt(encode(header))


@dataclass
class ObjectMask:
    """One object's segmentation on one frame."""

    object_id: int
    label: str
    colour: tuple[int, int, int]
    mask: np.ndarray  # (H, W) bool
    score: float
    present: bool = True  # the engine judges the object in view (False: occluded or out of view, mask empty)

    def meta(self) -> dict[str, Any]:
        ys, xs = np.nonzero(self.mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
        return {"id": self.object_id, "label": self.label, "colour": list(self.colour), "score": float(self.score),
                "area": int(xs.size), "bbox": bbox, "present": bool(self.present)}


def _object_meta(header: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The ``objects`` list, each entry checked: integer id, string label, [R, G, B] colour, finite score."""
    metas = []
    for i, meta in enumerate(f.items(header, "objects", what, default=[])):
        where = f"{what}: objects[{i}]"
        if not isinstance(meta, dict):
            raise ProtocolError(f"{where} must be a map, got {meta!r:.80}")
        colour = meta.get("colour", [255, 0, 0])
        if not (isinstance(colour, list) and len(colour) == 3
                and all(type(c) is int and 0 <= c <= 255 for c in colour)):
            raise ProtocolError(f"{where}: 'colour' must be [R, G, B] with integers 0-255, got {colour!r:.80}")
        metas.append({"id": f.integer(meta, "id", where, lo=1, hi=MAX_OBJECT_ID),
                      "label": f.text(meta, "label", where, default="", max_len=128), "colour": tuple(colour),
                      "score": f.number(meta, "score", where, default=0.0),
                      "present": f.boolean(meta, "present", where, default=True)})
    return metas


def _objects_from_meta(metas: list[dict[str, Any]], masks: list[np.ndarray]) -> list[ObjectMask]:
    return [ObjectMask(object_id=m["id"], label=m["label"], colour=m["colour"], mask=mask, score=m["score"],
                       present=m["present"])
            for m, mask in zip(metas, masks, strict=True)]


@dataclass
class SegmentationResult:
    """Worker -> publisher: the masks of every object on one frame, with the frame's pseudo-RGB."""

    TYPE: ClassVar[str] = "result"
    stream_id: str
    frame_id: int
    capture_ns: int
    rgb: np.ndarray
    objects: list[ObjectMask]
    engine: str
    hops: list[list[Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    wavelengths_nm: list[float] = field(default_factory=list)  # the frame's bands (empty: not told)

    def to_parts(self) -> list[Any]:
        h, w = self.rgb.shape[:2]
        masks = (np.stack([o.mask for o in self.objects]).astype(np.uint8) if self.objects
                 else np.zeros((0, h, w), np.uint8))
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "engine": self.engine, "notices": self.notices, "stats": self.stats,
                  "objects": [o.meta() for o in self.objects],
                  "wavelengths_nm": [float(v) for v in self.wavelengths_nm]}
        return encode(header, {"rgb": self.rgb, "masks": masks})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> SegmentationResult:
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "result")
        rgb, masks = _array(arrays, "rgb", "result"), _array(arrays, "masks", "result")
        metas = _object_meta(header, "result")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ProtocolError(f"result: rgb must be uint8 H x W x 3, got {rgb.dtype} {rgb.shape}")
        _check_size(rgb.shape[0], rgb.shape[1], "result")
        if masks.shape != (len(metas), *rgb.shape[:2]) or masks.dtype != np.uint8:
            raise ProtocolError(f"result: masks {masks.dtype} {masks.shape} do not match {len(metas)} object(s) on "
                                f"{rgb.shape[:2]} (uint8 expected)")
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, rgb=rgb,
                   objects=_objects_from_meta(metas, [m.astype(bool) for m in masks]),
                   engine=f.text(header, "engine", "result", default="", max_len=64), hops=hops,
                   notices=f.texts(header, "notices", "result", default=[]),
                   stats=f.mapping(header, "stats", "result", default={}),
                   wavelengths_nm=_wavelengths(header, "result"))


@dataclass
class MaskBroadcast:
    """Publisher -> displays: every object's mask, run-length encoded (protocol.masks)."""

    TYPE: ClassVar[str] = "masks"
    stream_id: str
    frame_id: int
    capture_ns: int
    size: tuple[int, int]  # (H, W)
    objects: list[ObjectMask]
    engine: str
    seq: int = 0  # publisher sequence number; a gap means this display missed messages
    hops: list[list[Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    publisher: str = ""  # the publisher run that numbered ``seq``; a new one starts counting again

    def to_parts(self) -> list[Any]:
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "engine": self.engine, "seq": self.seq, "publisher": self.publisher,
                  "size": list(self.size),
                  "notices": self.notices, "objects": [o.meta() for o in self.objects]}
        return encode(header, {f"rle{i}": rle_encode(o.mask) for i, o in enumerate(self.objects)})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> MaskBroadcast:
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "masks")
        size = _size(header, "masks")
        metas = _object_meta(header, "masks")
        if len(metas) * size[0] * size[1] > MAX_MASK_PIXELS:
            raise ProtocolError(f"masks: {len(metas)} object(s) of {size[0]} x {size[1]} pixels are more than the "
                                f"{MAX_MASK_PIXELS} mask pixels a broadcast may hold")
        masks = []
        for i in range(len(metas)):
            counts = _array(arrays, f"rle{i}", "masks")
            if counts.dtype != np.dtype("<u4"):
                raise ProtocolError(f"masks: rle{i} must be uint32 run lengths, got {counts.dtype}")
            masks.append(rle_decode(counts, size))
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, size=size,
                   objects=_objects_from_meta(metas, masks),
                   engine=f.text(header, "engine", "masks", default="", max_len=64),
                   seq=f.integer(header, "seq", "masks", default=0), hops=hops,
                   notices=f.texts(header, "notices", "masks", default=[]),
                   publisher=f.text(header, "publisher", "masks", default="", max_len=64))


def _wavelengths(header: dict[str, Any], what: str) -> list[float]:
    """The optional ``wavelengths_nm`` list: finite, positive, strictly increasing (empty when absent)."""
    values = f.items(header, "wavelengths_nm", what, default=[], max_len=4096)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values):
        raise ProtocolError(f"{what}: 'wavelengths_nm' must be positive finite numbers")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ProtocolError(f"{what}: 'wavelengths_nm' must increase strictly")
    return [float(v) for v in values]


@dataclass
class OverlayImage:
    """Publisher -> displays: pseudo-RGB with the masks drawn in, as an encoded JPEG or PNG."""

    TYPE: ClassVar[str] = "overlay"
    stream_id: str
    frame_id: int
    capture_ns: int
    encoding: str  # "jpeg" | "png"
    data: bytes | np.ndarray
    seq: int = 0
    hops: list[list[Any]] = field(default_factory=list)
    publisher: str = ""  # as in MaskBroadcast
    stale: bool = False  # drawn with the stale marker: the stream's newest mask is not live (same seq as before)

    def to_parts(self) -> list[Any]:
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "encoding": self.encoding, "seq": self.seq, "publisher": self.publisher,
                  "stale": self.stale}
        image = np.frombuffer(self.data, np.uint8) if isinstance(self.data, bytes) else self.data
        return encode(header, {"image": image})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> Self:
        what = cls.TYPE
        header, arrays = decode(parts, what)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, what)
        encoding = f.text(header, "encoding", what, max_len=16)
        if encoding not in ("jpeg", "png"):
            raise ProtocolError(f"{what}: encoding must be 'jpeg' or 'png', got {encoding!r}")
        data = _array(arrays, "image", what)
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ProtocolError(f"{what}: image must be 1-D uint8 encoded bytes, got {data.dtype} {data.shape}")
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, encoding=encoding, data=data,
                   seq=f.integer(header, "seq", what, default=0), hops=hops,
                   publisher=f.text(header, "publisher", what, default="", max_len=64),
                   stale=f.boolean(header, "stale", what, default=False))


@dataclass
class FrameImage(OverlayImage):
    """Publisher -> displays: the frame's pseudo-RGB alone (no masks), encoded, for displays that draw
    the masks themselves (the web page); same fields as OverlayImage."""

    TYPE: ClassVar[str] = "image"


@dataclass
class StreamInfo:
    """Publisher -> displays: what a display needs to show a stream besides its pixels, and whether the
    stream is live. Sent with every result and when the stream goes stale; replayed to a display
    that joins late."""

    TYPE: ClassVar[str] = "stream"
    stream_id: str
    frame_id: int  # the newest result's frame
    capture_ns: int
    size: tuple[int, int]  # (H, W)
    engine: str
    wavelengths_nm: list[float] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)  # the legend: id, label, colour, score, present, area
    stale: bool = False  # no result for ``age_ms`` > ``display.stale_after_s``: the newest mask is not live
    age_ms: float = 0.0  # since the publisher received the newest result
    displays: int = 0  # subscriptions the publisher holds to this stream's masks (every display, bridge, recorder)
    seq: int = 0  # the newest result's seq (as in MaskBroadcast)
    hops: list[list[Any]] = field(default_factory=list)
    publisher: str = ""

    def to_parts(self) -> list[Any]:
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "size": list(self.size), "engine": self.engine,
                  "wavelengths_nm": [float(v) for v in self.wavelengths_nm], "notices": self.notices,
                  "objects": self.objects, "stale": self.stale, "age_ms": float(self.age_ms), "seq": self.seq,
                  "publisher": self.publisher, "displays": self.displays}
        return encode(header, {})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> StreamInfo:
        header, _ = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "stream")
        size = _size(header, "stream")
        legend = []
        for meta in _object_meta(header, "stream"):
            legend.append({**meta, "colour": list(meta["colour"])})
        for entry, raw in zip(legend, header.get("objects", []), strict=True):
            entry["area"] = f.integer(raw, "area", "stream: objects", default=0)
        age = f.number(header, "age_ms", "stream", default=0.0)
        if not math.isfinite(age) or age < 0:
            raise ProtocolError(f"stream: 'age_ms' must be a finite number >= 0, got {age!r}")
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, size=size,
                   engine=f.text(header, "engine", "stream", default="", max_len=64),
                   wavelengths_nm=_wavelengths(header, "stream"),
                   notices=f.texts(header, "notices", "stream", default=[]),
                   objects=legend, stale=f.boolean(header, "stale", "stream", default=False), age_ms=float(age),
                   displays=f.integer(header, "displays", "stream", default=0),
                   seq=f.integer(header, "seq", "stream", default=0), hops=hops,
                   publisher=f.text(header, "publisher", "stream", default="", max_len=64))
