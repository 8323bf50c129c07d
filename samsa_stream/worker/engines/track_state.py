"""One object's SAM2 streaming memory as bytes and back, so tracking survives a worker restart.

The bytes are a safetensors payload: the tensors, plus in its metadata the format name, the
version and a JSON description of the track.

What is kept (everything the next frame reads, bit for bit):
- every conditioning frame (frame index, memory features, object pointer, object score logit),
  in the tracker's order;
- every recent frame the tracker still holds (memory features inside the memory window, the
  object pointer for the whole pointer window), oldest first;
- the memory positional encoding, once (it is the same for every frame);
- ``last_frame`` and ``last_tracked``;
- the identity of the model the memory came from (``model_id``), checked on load.

What is not kept: ``last_result`` and ``points``. A restored track treats its next frame as a
new one: ``track`` on a later frame continues from the memory as if nothing happened, and a
click on a later frame adds a conditioning frame as usual. Give a restored track frames
after ``last_frame`` only: the tracker refuses earlier ones, ``track`` on ``last_frame`` itself
would segment it a second time into the memory, and a click there starts that frame from its new
clicks alone (the earlier clicks on it and its result are gone).

Score logits are stored as JSON numbers with their dtype: a float32, bfloat16 or float16 value
is exactly a Python float, so they come back bit for bit. A CRC-32 over the description and every
tensor's bytes catches a damaged file that would otherwise still parse (a flipped bit in a tensor);
it guards against accidents, not against someone forging a file.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...runtime import shorten
from .base import EngineError
from .sam2_tracker import MemoryEntry, ObjectTrack

if TYPE_CHECKING:
    from .sam2_runner import Sam2Runner
    from .sam2_tracker import Sam2Tracker

TRACK_STATE_FORMAT = "samsa-stream/sam2-track"
TRACK_STATE_VERSION = 1
DEFAULT_MAX_BYTES = 64 * 2**20  # a SAM2.1 track at 1024 px is about 6 MiB at most (see the module tests)
MAX_FRAME_INDEX = 2**62  # far beyond any stream, and safe in every integer the model computes from it

# safetensors dtype names <-> torch, for the tensors a track holds.
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MEMORY_DTYPE = "BF16"  # the tracker stores memory features in bfloat16
_POS_ENC = "memory_pos_enc"


@dataclass(frozen=True)
class TrackLayout:
    """What a tracker's memory entries look like: tensor shapes and how much of them it keeps."""

    memory_shape: tuple[int, int, int, int]  # (1, mem_dim, h, w) of memory features and their positional encoding
    pointer_shape: tuple[int, int]  # (1, hidden_dim) of an object pointer
    memory_window: int  # recent frames keep memory features from ``last_frame - memory_window`` on
    pointer_window: int  # recent frames are kept from ``last_frame - max(both windows)`` on
    max_cond_frames: int  # conditioning frames kept


def track_layout(tracker: Sam2Tracker) -> TrackLayout:
    """The layout of ``tracker``'s memory entries, which ``load_track`` checks a saved track against."""
    model = tracker.model
    side = int(model.sam_image_embedding_size)
    return TrackLayout(memory_shape=(1, int(model.mem_dim), side, side), pointer_shape=(1, int(model.hidden_dim)),
                       memory_window=tracker.memory_window, pointer_window=tracker.pointer_window,
                       max_cond_frames=tracker.max_cond_frames)


def model_identity(runner: Sam2Runner) -> dict[str, object]:
    """What memory depends on: the variant, the input size and where the weights came from."""
    loaded = runner.loaded
    return {"variant": loaded.variant.name, "image_size": int(runner.image_size), "source": loaded.source}


def save_track(track: ObjectTrack, model_id: dict[str, object], max_bytes: int = DEFAULT_MAX_BYTES,
               extra: dict[str, Any] | None = None) -> bytes:
    """``track``'s memory as bytes for ``load_track``; EngineError when the track cannot be saved
    (no clicks yet, entries that are not what the tracker makes, non-finite values, more than
    ``max_bytes``). ``extra`` (JSON, finite numbers) is kept with it for ``load_track_and_extra``.
    The track itself is not changed."""
    model = _model_json(model_id)
    if not track.cond:
        raise EngineError("this object has no clicks yet: there is no memory to save")
    tensors: dict[str, torch.Tensor] = {}
    pos_enc: list[torch.Tensor] | None = None
    described: dict[str, list[dict[str, Any]]] = {"cond": [], "recent": []}
    # Recent frames are read by frame index only, so oldest first restores their documented order.
    for kind, entries in (("cond", list(track.cond.items())), ("recent", sorted(track.recent.items()))):
        for frame_idx, entry in entries:
            if entry.frame_idx != frame_idx:
                raise EngineError(f"{kind} entry under frame {frame_idx} says it is frame {entry.frame_idx}")
            score = entry.object_score_logits
            if score.numel() != 1 or score.dtype not in _DTYPE_NAMES.values():
                raise EngineError(f"frame {frame_idx}: object score must be one float value, got "
                                  f"{score.dtype} {tuple(score.shape)}")
            item: dict[str, Any] = {"frame": frame_idx, "score": float(score.reshape(-1)[0].item()),
                                    "score_dtype": str(score.dtype).removeprefix("torch.")}
            if kind == "recent":
                item["features"] = entry.maskmem_features is not None
            if entry.maskmem_features is not None:
                pos_enc = _same_pos_enc(pos_enc, entry, frame_idx)
                tensors[f"features.{frame_idx}"] = _cpu(entry.maskmem_features)
            elif kind == "cond":
                raise EngineError(f"conditioning frame {frame_idx} has no memory features")
            tensors[f"obj_ptr.{frame_idx}"] = _cpu(entry.obj_ptr)
            described[kind].append(item)
    if pos_enc is not None:
        tensors[_POS_ENC] = _cpu(pos_enc[0])
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total > max_bytes:
        raise EngineError(f"this track's memory is {total} bytes, more than the {max_bytes} a saved track may hold")
    description = {"model": model, "last_frame": track.last_frame, "last_tracked": bool(track.last_tracked),
                   **described}
    if extra is not None:
        description["extra"] = extra
    plan = _parse_description(description)
    _check_tensor_specs(plan, {name: (_safetensors_dtype(t.dtype), list(t.shape)) for name, t in tensors.items()},
                        None)
    _check_finite(tensors)
    from safetensors.torch import save

    text = json.dumps(description, allow_nan=False, separators=(",", ":"))
    metadata = {"format": TRACK_STATE_FORMAT, "version": str(TRACK_STATE_VERSION), "track": text,
                "crc32": _crc32(text, tensors)}
    data: bytes = save(tensors, metadata=metadata)
    if len(data) > max_bytes:
        raise EngineError(f"this track's state is {len(data)} bytes, more than the {max_bytes} a saved track may hold")
    return data


def load_track(data: bytes, model_id: dict[str, object], device: torch.device, layout: TrackLayout,
               max_bytes: int = DEFAULT_MAX_BYTES) -> ObjectTrack:
    """The track ``save_track`` wrote (see ``load_track_and_extra``)."""
    return load_track_and_extra(data, model_id, device, layout, max_bytes)[0]


def load_track_and_extra(data: bytes, model_id: dict[str, object], device: torch.device, layout: TrackLayout,
                         max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[ObjectTrack, dict[str, Any]]:
    """The track ``save_track`` wrote, on ``device``, ready for the next frame of a tracker whose
    ``track_layout`` is ``layout``.

    EngineError, naming the problem, for anything that is not such a track: more than ``max_bytes``,
    truncated, damaged or foreign bytes, another format or a newer version, memory of another model
    (``model_id`` differs: other weights or another image size), missing or extra tensors, dtypes or
    shapes other than the model's entries have, non-finite values, frame indices out of order,
    memory features that do not follow the model's memory window."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EngineError(f"a saved track must be bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:  # before any copy or parse
        raise EngineError(f"saved track is {size} bytes, more than the {max_bytes} a saved track may hold")
    data = bytes(data)
    header, metadata = _read_header(data)
    fmt = metadata.get("format")
    if fmt != TRACK_STATE_FORMAT:
        raise EngineError(f"not a saved SAM2 track: format {_brief(fmt)}, expected {TRACK_STATE_FORMAT!r}")
    version = metadata.get("version")
    if version is None or not (version.isascii() and version.isdigit()) or len(version) > 9:
        raise EngineError(f"saved track has no valid version: {_brief(version)}")
    if int(version) > TRACK_STATE_VERSION:
        raise EngineError(f"saved track is version {int(version)}, newer than the version {TRACK_STATE_VERSION} "
                          "this samsa-stream reads")
    if int(version) != TRACK_STATE_VERSION:
        raise EngineError(f"saved track is version {int(version)}; this samsa-stream reads version "
                          f"{TRACK_STATE_VERSION} only")
    try:
        description = json.loads(metadata.get("track", ""), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise EngineError(f"saved track's description is not valid JSON: {shorten(str(exc), 100)}") from None
    if not isinstance(description, dict):
        raise EngineError(f"saved track's description must be a map, got {_brief(description)}")
    expected_model = _model_json(model_id)
    if description.get("model") != expected_model:
        raise EngineError(f"saved track is memory of model {_brief(description.get('model'), 200)}, but this "
                          f"worker runs {_brief(expected_model, 200)}; memory from other weights or another "
                          "image size cannot be used")
    plan = _parse_description(description)
    specs: dict[str, tuple[Any, Any]] = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise EngineError(f"saved track's tensor {_brief(name)} has no description")
        specs[name] = (info.get("dtype"), info.get("shape"))  # checked next
    _check_tensor_specs(plan, specs, layout)
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors: dict[str, torch.Tensor] = load(data)
    except (SafetensorError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise EngineError(f"saved track's tensors cannot be read: {shorten(str(exc), 120)}") from None
    if metadata.get("crc32") != _crc32(metadata["track"], tensors):
        raise EngineError("saved track is damaged: its checksum does not match its content")
    _check_finite(tensors)
    extra = description.get("extra", {})
    if not isinstance(extra, dict):
        raise EngineError(f"saved track's extra record must be a map, got {_brief(extra)}")
    return _build(plan, tensors, device), extra


# -- the description ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    frame: int
    score: float
    score_dtype: torch.dtype
    features: bool


@dataclass(frozen=True)
class _Plan:
    cond: list[_Planned]
    recent: list[_Planned]
    last_frame: int
    last_tracked: bool


def _parse_description(description: dict[str, Any]) -> _Plan:
    """The track's description checked: frames in order, scores finite, the newest frame present."""
    unknown = sorted(set(description) - {"model", "last_frame", "last_tracked", "cond", "recent", "extra"})
    if unknown:
        raise EngineError(f"saved track's description has unknown fields {_brief(unknown)}")
    last_frame, last_tracked = description.get("last_frame"), description.get("last_tracked")
    if type(last_frame) is not int or not 0 <= last_frame <= MAX_FRAME_INDEX:
        raise EngineError(f"saved track's last_frame must be a frame index 0..{MAX_FRAME_INDEX}, "
                          f"got {_brief(last_frame)}")
    if type(last_tracked) is not bool:
        raise EngineError(f"saved track's last_tracked must be true or false, got {_brief(last_tracked)}")
    cond = _parse_entries(description.get("cond"), "conditioning")
    recent = _parse_entries(description.get("recent"), "recent")
    if not cond:
        raise EngineError("saved track has no conditioning frame: there is nothing to track from")
    both = {e.frame for e in cond} & {e.frame for e in recent}
    if both:
        raise EngineError(f"saved track has frame(s) {sorted(both)[:5]} both as conditioning and as recent frames")
    newest = max(e.frame for e in (*cond, *recent))
    if newest != last_frame:
        raise EngineError(f"saved track's last_frame is {last_frame}, but its newest frame is {newest}")
    with_features = [e.features for e in recent]
    if with_features != sorted(with_features):
        raise EngineError("saved track has recent frames without memory features after ones with them "
                          f"(frames {[e.frame for e in recent if not e.features][-3:]})")
    return _Plan(cond=cond, recent=recent, last_frame=last_frame, last_tracked=last_tracked)


def _parse_entries(items: Any, kind: str) -> list[_Planned]:
    if not isinstance(items, list):
        raise EngineError(f"saved track's {kind} frames must be a list, got {_brief(items)}")
    out: list[_Planned] = []
    for item in items:
        if not isinstance(item, dict):
            raise EngineError(f"saved track's {kind} frame must be a map, got {_brief(item)}")
        fields = {"frame", "score", "score_dtype"} | ({"features"} if kind == "recent" else set())
        if set(item) != fields:
            raise EngineError(f"saved track's {kind} frame needs the fields {sorted(fields)}, "
                              f"got {_brief(sorted(item))}")
        frame, score, dtype_name = item["frame"], item["score"], item["score_dtype"]
        if type(frame) is not int or not 0 <= frame <= MAX_FRAME_INDEX:
            raise EngineError(f"saved track's {kind} frame indices must be integers 0..{MAX_FRAME_INDEX}, "
                              f"got {_brief(frame)}")
        if out and frame <= out[-1].frame:
            raise EngineError(f"saved track's {kind} frame indices must increase, got {out[-1].frame} then {frame}")
        dtype = _DTYPE_NAMES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise EngineError(f"saved track's {kind} frame {frame}: score dtype must be one of "
                              f"{sorted(_DTYPE_NAMES)}, got {_brief(dtype_name)}")
        if not _finite_in(score, dtype):
            raise EngineError(f"saved track's {kind} frame {frame}: score must be a finite {dtype_name}, "
                              f"got {_brief(score)}")
        features = item.get("features", True)
        if type(features) is not bool:
            raise EngineError(f"saved track's {kind} frame {frame}: features must be true or false, "
                              f"got {_brief(features)}")
        out.append(_Planned(frame=frame, score=float(score), score_dtype=dtype, features=features))
    return out


def _check_tensor_specs(plan: _Plan, specs: dict[str, tuple[Any, Any]], layout: TrackLayout | None) -> None:
    """The tensors (name -> safetensors dtype, shape) are exactly those the description needs, each
    with the dtype and shape its entry needs."""
    entries = [*plan.cond, *plan.recent]
    needed = {f"obj_ptr.{e.frame}" for e in entries} | {f"features.{e.frame}" for e in entries if e.features}
    if any(e.features for e in entries):
        needed.add(_POS_ENC)
    missing, extra = sorted(needed - set(specs)), sorted(set(specs) - needed)
    if missing or extra:
        parts = [f"missing tensors {_brief(missing)}"] if missing else []
        parts += [f"extra tensors {_brief(extra)}"] if extra else []
        raise EngineError("saved track does not match its description: " + "; ".join(parts))
    for name, (dtype, shape) in specs.items():
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise EngineError(f"saved track's tensor {name!r} has no valid shape: {_brief(shape)}")
        wanted = [_MEMORY_DTYPE] if name.startswith("features.") else list(_DTYPES)
        if dtype not in wanted:
            raise EngineError(f"saved track's tensor {name!r} is {_brief(dtype)}, expected {' or '.join(wanted)}")
    memory_shape = list(layout.memory_shape) if layout else specs.get(_POS_ENC, (None, None))[1]
    for name in [n for n in specs if n.startswith("features.") or n == _POS_ENC]:
        shape = specs[name][1]
        if len(shape) != 4 or shape[0] != 1 or 0 in shape or shape != memory_shape:
            raise EngineError(f"saved track's tensor {name!r} has shape {tuple(shape)}, expected "
                              f"{tuple(memory_shape or ('1', 'mem_dim', 'h', 'w'))}")
    pointer_shape = list(layout.pointer_shape) if layout else specs[f"obj_ptr.{plan.cond[0].frame}"][1]
    for name in [n for n in specs if n.startswith("obj_ptr.")]:
        shape = specs[name][1]
        if len(shape) != 2 or shape[0] != 1 or shape[1] == 0 or shape != pointer_shape:
            raise EngineError(f"saved track's tensor {name!r} has shape {tuple(shape)}, expected "
                              f"{tuple(pointer_shape) if len(pointer_shape) == 2 else ('1', 'hidden_dim')}")
    if layout is not None:
        # What the tracker keeps after each frame, so a restored track is as bounded as a live one.
        if len(plan.cond) > layout.max_cond_frames:
            raise EngineError(f"saved track has {len(plan.cond)} conditioning frames, more than the "
                              f"{layout.max_cond_frames} this tracker keeps")
        keep_from = plan.last_frame - max(layout.memory_window, layout.pointer_window)
        old = [e.frame for e in plan.recent if e.frame < keep_from]
        if old:
            raise EngineError(f"saved track has recent frames {old[:5]} older than the tracker keeps "
                              f"(from frame {keep_from} on)")
        features_from = plan.last_frame - layout.memory_window
        wrong = [e.frame for e in plan.recent if e.features != (e.frame >= features_from)]
        if wrong:
            raise EngineError(f"saved track's recent frames {wrong[:5]} do not follow the memory window of "
                              f"{layout.memory_window} frames (memory features from frame {features_from} on)")


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise EngineError(f"saved track's tensor {name!r} holds non-finite values")


def _build(plan: _Plan, tensors: dict[str, torch.Tensor], device: torch.device) -> ObjectTrack:
    """The ObjectTrack the checked plan and tensors describe, every tensor on ``device``."""
    # One positional encoding shared by every entry, as the tracker shares its own.
    pos_enc = [tensors[_POS_ENC].to(device, copy=True)] if _POS_ENC in tensors else None

    def entry(e: _Planned) -> MemoryEntry:
        features = tensors[f"features.{e.frame}"].to(device, copy=True) if e.features else None
        return MemoryEntry(frame_idx=e.frame, maskmem_features=features,
                           maskmem_pos_enc=pos_enc if e.features else None,
                           obj_ptr=tensors[f"obj_ptr.{e.frame}"].to(device, copy=True),
                           object_score_logits=torch.tensor([[e.score]], dtype=e.score_dtype, device=device))

    return ObjectTrack(cond={e.frame: entry(e) for e in plan.cond}, recent={e.frame: entry(e) for e in plan.recent},
                       last_frame=plan.last_frame, last_result=None, last_tracked=plan.last_tracked, points=None)


# -- helpers -----------------------------------------------------------------------------------


def _read_header(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The safetensors header (tensor name -> description) and its string metadata, read before any tensor."""
    if len(data) < 8:
        raise EngineError(f"saved track is truncated: {len(data)} bytes, not even a header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise EngineError(f"saved track is truncated or not a safetensors payload: its header claims {size} bytes, "
                          f"{len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + size], parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise EngineError("saved track is not a safetensors payload: its header is not JSON") from None
    if not isinstance(header, dict):
        raise EngineError(f"saved track's header must be a map, got {_brief(header)}")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise EngineError("saved track has no format metadata: not a samsa-stream SAM2 track")
    return header, metadata


def _model_json(model_id: dict[str, object]) -> Any:
    """``model_id`` as it reads back from JSON (so the saved and the running identity compare equal)."""
    if not isinstance(model_id, dict) or not model_id:
        raise EngineError(f"model_id must be a non-empty map, got {_brief(model_id)}")
    try:
        return json.loads(json.dumps(model_id, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise EngineError(f"model_id must hold JSON values only: {exc}") from None


def _same_pos_enc(pos_enc: list[torch.Tensor] | None, entry: MemoryEntry, frame_idx: int) -> list[torch.Tensor]:
    """The one memory positional encoding of the track (every entry's must be equal)."""
    own = entry.maskmem_pos_enc
    if own is None or len(own) != 1:
        raise EngineError(f"frame {frame_idx}: memory features need one positional encoding, got "
                          f"{'none' if own is None else len(own)}")
    if pos_enc is not None and own is not pos_enc and not (
            own[0].dtype == pos_enc[0].dtype and own[0].shape == pos_enc[0].shape
            and torch.equal(own[0], pos_enc[0].to(own[0].device))):
        raise EngineError(f"frame {frame_idx}: its memory positional encoding differs from the other frames'")
    return pos_enc if pos_enc is not None else own


def _crc32(description: str, tensors: dict[str, torch.Tensor]) -> str:
    """CRC-32 of the description and of every tensor (name, dtype, shape, bytes), in name order."""
    crc = zlib.crc32(description.encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        crc = zlib.crc32(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode(), crc)
        crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy().data, crc)
    return f"{crc:08x}"


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy that shares storage with nothing (safetensors refuses shared storage)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def _safetensors_dtype(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    return str(dtype)


def _finite_in(value: Any, dtype: torch.dtype) -> bool:
    """Whether ``value`` is a JSON number that stays finite in ``dtype``."""
    if type(value) not in (int, float):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and bool(torch.isfinite(torch.tensor(number, dtype=dtype)))


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _brief(value: Any, limit: int = 60) -> str:
    """A bounded description of a bad value for a message."""
    return shorten(repr(value), limit)
