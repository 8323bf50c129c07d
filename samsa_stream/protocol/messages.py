"""The message model: what the bytes mean. Transport (sockets, topics) lives elsewhere.

Each message converts to and from the codec's (header, arrays) pair; ``from_parts``
validates everything a receiver relies on and raises ProtocolError naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .codec import ProtocolError, decode, encode
from .masks import rle_decode, rle_encode

CUBE_DTYPES = (np.dtype("<f4"), np.dtype("<f2"))
PROMPT_OPS = ("click", "undo", "remove", "reset", "state", "status")


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", (int, float): "a number"}


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in header:
        raise ProtocolError(f"{what}: header field {name!r} is missing")
    value = header[name]
    wrong_bool = isinstance(value, bool) and kind is not bool  # bool is an int subclass in Python
    if wrong_bool or not isinstance(value, kind):
        raise ProtocolError(f"{what}: header field {name!r} must be {_KIND_NAMES.get(kind, kind)}, got {value!r}")
    return value


def _array(arrays: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in arrays:
        raise ProtocolError(f"{what}: array {name!r} is missing")
    return arrays[name]


def _stream_fields(header: dict[str, Any], what: str) -> tuple[str, int, int, list[list[Any]]]:
    stream_id = _field(header, "stream", str, what)
    frame_id = _field(header, "frame_id", int, what)
    capture_ns = _field(header, "capture_ns", int, what)
    hops = header.get("hops", [])
    if not isinstance(hops, list) or not all(isinstance(h, list) and len(h) == 2 for h in hops):
        raise ProtocolError(f"{what}: 'hops' must be a list of [name, ns] pairs")
    return stream_id, frame_id, capture_ns, hops


def check_cube(cube: np.ndarray, wavelengths_nm: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None = None,
               what: str = "frame") -> None:
    """Raise ProtocolError unless the cube, wavelengths, pseudo-RGB and label map agree (DESIGN section 3)."""
    if cube.ndim != 3 or min(cube.shape) < 1:
        raise ProtocolError(f"{what}: cube must be H x W x B with every side >= 1, got shape {cube.shape}")
    if cube.dtype not in CUBE_DTYPES:
        raise ProtocolError(f"{what}: cube dtype must be float32 or float16, got {cube.dtype}")
    h, w, b = cube.shape
    if wavelengths_nm.shape != (b,):
        raise ProtocolError(f"{what}: {wavelengths_nm.shape[0] if wavelengths_nm.ndim == 1 else wavelengths_nm.shape} wavelengths for {b} bands")
    if not np.all(np.isfinite(wavelengths_nm)) or (b > 1 and not np.all(np.diff(wavelengths_nm) > 0)):
        raise ProtocolError(f"{what}: wavelengths must be finite and strictly increasing")
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ProtocolError(f"{what}: rgb must be uint8 {h}x{w}x3, got {rgb.dtype} {rgb.shape}")
    if labels is not None and labels.shape != (h, w):
        raise ProtocolError(f"{what}: label map must be {h}x{w}, got {labels.shape}")
    bad = count_nonfinite(cube)
    if bad:
        raise ProtocolError(f"{what}: cube has {bad} NaN/inf value(s)")


def count_nonfinite(cube: np.ndarray) -> int:
    """How many NaN/inf values ``cube`` holds."""
    # One float32 sum is far cheaper than a full isfinite pass and is NaN/inf whenever the cube has one;
    # only then (or if the sum overflowed) is every value checked.
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
        return self.cube.shape  # type: ignore[return-value]

    def validate(self) -> "CubeFrame":
        check_cube(self.cube, self.wavelengths_nm, self.rgb, self.labels, what=f"frame {self.stream_id}#{self.frame_id}")
        return self

    def to_parts(self, cube_ref: dict[str, Any] | None = None) -> list[Any]:
        """Multipart parts; with ``cube_ref`` the cube stays out of the message (it lies in shared memory)."""
        arrays = {"cube": self.cube, "wavelengths_nm": np.asarray(self.wavelengths_nm, dtype=np.float64), "rgb": self.rgb}
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(np.int32, copy=False)
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "calibration": self.calibration, "source": self.source}
        if cube_ref is not None:
            del arrays["cube"]
            header["cube_ref"] = cube_ref
        return encode(header, arrays)

    @classmethod
    def from_parts(cls, parts: list[Any], resolve_cube: Callable[[Any], np.ndarray] | None = None) -> "CubeFrame":
        """Decode and validate; ``resolve_cube`` maps a shared-memory ``cube_ref`` to the cube."""
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "frame")
        cube_ref = header.get("cube_ref")
        if cube_ref is None:
            cube = _array(arrays, "cube", "frame")
        elif resolve_cube is None:
            raise ProtocolError("frame: the cube lies in shared memory (cube_ref) and this receiver cannot map it")
        else:
            cube = resolve_cube(cube_ref)
        frame = cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns,
                    cube=cube, wavelengths_nm=_array(arrays, "wavelengths_nm", "frame"),
                    rgb=_array(arrays, "rgb", "frame"), calibration=str(header.get("calibration", "reflectance")),
                    source=header.get("source") if isinstance(header.get("source"), dict) else {},
                    labels=arrays.get("labels"), hops=hops, cube_ref=cube_ref)
        return frame.validate()


@dataclass
class PromptRequest:
    """A console's request to the worker: a click, an undo, a removal, a reset or a query."""

    TYPE: ClassVar[str] = "prompt"
    op: str
    stream_id: str
    request_id: int = 0
    object_id: int | None = None
    x: float | None = None  # column, original image pixels
    y: float | None = None  # row
    positive: bool = True
    frame_id: int | None = None  # frame the user clicked on (defaults to the latest)
    label: str | None = None  # object name shown on displays

    def to_parts(self) -> list[Any]:
        header = {k: v for k, v in {
            "type": self.TYPE, "op": self.op, "stream": self.stream_id, "request_id": self.request_id,
            "object_id": self.object_id, "x": self.x, "y": self.y, "positive": self.positive,
            "frame_id": self.frame_id, "label": self.label}.items() if v is not None}
        return encode(header)

    @classmethod
    def from_parts(cls, parts: list[Any]) -> "PromptRequest":
        header, _ = decode(parts, cls.TYPE)
        op = _field(header, "op", str, "prompt")
        if op not in PROMPT_OPS:
            raise ProtocolError(f"prompt: unknown op {op!r} (expected one of {', '.join(PROMPT_OPS)})")
        req = cls(op=op, stream_id=_field(header, "stream", str, "prompt"),
                  request_id=header.get("request_id", 0) if isinstance(header.get("request_id", 0), int) else 0)
        for name, kind in (("object_id", int), ("frame_id", int), ("label", str), ("positive", bool)):
            if name in header:
                setattr(req, name, _field(header, name, kind, "prompt"))
        for name in ("x", "y"):
            if name in header:
                value = _field(header, name, (int, float), "prompt")
                if isinstance(value, bool) or not np.isfinite(value):
                    raise ProtocolError(f"prompt: {name} must be a finite number, got {value!r}")
                setattr(req, name, float(value))
        if op == "click":
            missing = [n for n in ("object_id", "x", "y") if getattr(req, n) is None]
            if missing:
                raise ProtocolError(f"prompt: click needs {', '.join(missing)}")
        if op == "remove" and req.object_id is None:
            raise ProtocolError("prompt: remove needs object_id")
        return req


@dataclass
class PromptReply:
    TYPE: ClassVar[str] = "prompt_reply"
    request_id: int
    ok: bool
    error: str | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def to_parts(self) -> list[Any]:
        return encode({"type": self.TYPE, "request_id": self.request_id, "ok": self.ok, "error": self.error, "state": self.state})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> "PromptReply":
        header, _ = decode(parts, cls.TYPE)
        return cls(request_id=header.get("request_id", 0), ok=bool(_field(header, "ok", bool, "prompt reply")),
                   error=header.get("error"), state=header.get("state") or {})


@dataclass
class ObjectMask:
    """One object's segmentation on one frame."""

    object_id: int
    label: str
    colour: tuple[int, int, int]
    mask: np.ndarray  # (H, W) bool
    score: float

    def meta(self) -> dict[str, Any]:
        ys, xs = np.nonzero(self.mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
        return {"id": self.object_id, "label": self.label, "colour": list(self.colour), "score": float(self.score),
                "area": int(xs.size), "bbox": bbox}


def _object_meta(header: dict[str, Any], what: str) -> list[dict[str, Any]]:
    objects = header.get("objects", [])
    if not isinstance(objects, list) or not all(isinstance(o, dict) and isinstance(o.get("id"), int) for o in objects):
        raise ProtocolError(f"{what}: 'objects' must be a list of maps with an integer 'id'")
    return objects


def _objects_from_meta(metas: list[dict[str, Any]], masks: list[np.ndarray]) -> list[ObjectMask]:
    return [ObjectMask(object_id=m["id"], label=str(m.get("label", "")), colour=tuple(m.get("colour", (255, 0, 0))),
                       mask=mask, score=float(m.get("score", 0.0))) for m, mask in zip(metas, masks)]


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

    def to_parts(self) -> list[Any]:
        h, w = self.rgb.shape[:2]
        masks = np.stack([o.mask for o in self.objects]).astype(np.uint8) if self.objects else np.zeros((0, h, w), np.uint8)
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "engine": self.engine, "notices": self.notices, "stats": self.stats,
                  "objects": [o.meta() for o in self.objects]}
        return encode(header, {"rgb": self.rgb, "masks": masks})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> "SegmentationResult":
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "result")
        rgb, masks = _array(arrays, "rgb", "result"), _array(arrays, "masks", "result")
        metas = _object_meta(header, "result")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ProtocolError(f"result: rgb must be uint8 H x W x 3, got {rgb.dtype} {rgb.shape}")
        if masks.shape != (len(metas), *rgb.shape[:2]):
            raise ProtocolError(f"result: masks shape {masks.shape} does not match {len(metas)} object(s) on {rgb.shape[:2]}")
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, rgb=rgb,
                   objects=_objects_from_meta(metas, [m.astype(bool) for m in masks]), engine=str(header.get("engine", "")),
                   hops=hops, notices=list(header.get("notices", [])), stats=dict(header.get("stats", {})))


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

    def to_parts(self) -> list[Any]:
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "engine": self.engine, "seq": self.seq, "size": list(self.size),
                  "notices": self.notices, "objects": [o.meta() for o in self.objects]}
        return encode(header, {f"rle{i}": rle_encode(o.mask) for i, o in enumerate(self.objects)})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> "MaskBroadcast":
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "masks")
        size = header.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
            raise ProtocolError(f"masks: 'size' must be [H, W] with positive integers, got {size!r}")
        metas = _object_meta(header, "masks")
        masks = [rle_decode(_array(arrays, f"rle{i}", "masks"), (size[0], size[1])) for i in range(len(metas))]
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, size=(size[0], size[1]),
                   objects=_objects_from_meta(metas, masks), engine=str(header.get("engine", "")),
                   seq=int(header.get("seq", 0)), hops=hops, notices=list(header.get("notices", [])))


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

    def to_parts(self) -> list[Any]:
        header = {"type": self.TYPE, "stream": self.stream_id, "frame_id": self.frame_id, "capture_ns": self.capture_ns,
                  "hops": self.hops, "encoding": self.encoding, "seq": self.seq}
        return encode(header, {"image": np.frombuffer(self.data, np.uint8) if isinstance(self.data, bytes) else self.data})

    @classmethod
    def from_parts(cls, parts: list[Any]) -> "OverlayImage":
        header, arrays = decode(parts, cls.TYPE)
        stream_id, frame_id, capture_ns, hops = _stream_fields(header, "overlay")
        encoding = _field(header, "encoding", str, "overlay")
        if encoding not in ("jpeg", "png"):
            raise ProtocolError(f"overlay: encoding must be 'jpeg' or 'png', got {encoding!r}")
        data = _array(arrays, "image", "overlay")
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ProtocolError(f"overlay: image must be 1-D uint8 encoded bytes, got {data.dtype} {data.shape}")
        return cls(stream_id=stream_id, frame_id=frame_id, capture_ns=capture_ns, encoding=encoding, data=data,
                   seq=int(header.get("seq", 0)), hops=hops)
