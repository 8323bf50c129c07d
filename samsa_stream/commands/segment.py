"""``samsa-stream segment``: run any engine on one frame or on every frame of a capture, offline, and
save the result.

The same ingest (readers + normalizer) and engines as the live node, without sockets: for
evaluating engines on recorded data and for checking a checkpoint or adapter before deployment.
A sequence goes through the engine as a live stream goes through the worker: one engine, one
prompt book, one memory per object carried from frame to frame, clicks applied on their frames.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cli import common_options, setting_flag, settings_from
from ..errors import CommandError
from .worker import engine_flags

if TYPE_CHECKING:
    from ..protocol import CubeFrame
    from ..settings import Settings, WorkerSettings
    from ..worker.engines import Engine

log = logging.getLogger(__name__)

_CLICK = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?),\s*([-+]?\d+(?:\.\d*)?)(?:,\s*(\d+))?(?:@(\d+))?\s*$")
_FRAME = re.compile(r"^\s*(\d+)\s*$")
CLICK_FORMAT = "X,Y[,LABEL][@OBJECT]"
CLICK_METAVAR = "[FRAME:]X,Y[,LABEL][@OBJECT]"
STREAM_ID = "segment"  # the stream id the command's frames carry (and the engine forgets at the end)
ABSENT_LOGIT = -1e4  # logits of an object on the frames before its first click (its mask is empty there)


@dataclass(frozen=True)
class ClickSpec:
    """One ``--click``: column x, row y (original pixels), positive or negative, object id, and the frame it
    is on (None: not given, frame 0 of a sequence or the ``--frame`` of a single frame)."""

    x: float
    y: float
    positive: bool = True
    object_id: int = 1
    frame: int | None = None

    def __str__(self) -> str:
        where = "" if self.frame is None else f"{self.frame}:"
        return f"{where}{self.x:g},{self.y:g}"


def parse_click(text: str) -> ClickSpec:
    """``'120,64'``, ``'120,64,0'``, ``'120,64,1@2'``, ``'3:120,64'`` -> ClickSpec; CommandError naming the
    problem."""
    frame: int | None = None
    body = text
    if ":" in text:
        frame_text, body = text.split(":", 1)
        frame_match = _FRAME.match(frame_text)
        if frame_match is None:
            raise CommandError(f"--click {text!r}: FRAME must be a frame index 0, 1, 2, ... before the ':', "
                               f"got {frame_text.strip()!r}")
        frame = int(frame_match.group(1))
    match = _CLICK.match(body)
    if match is None:
        raise CommandError(f"--click {text!r} must be {CLICK_FORMAT} or FRAME:{CLICK_FORMAT}: X the column and Y "
                         "the row in image pixels, LABEL 1 (positive, default) or 0 (negative), OBJECT a positive "
                         "integer (default 1), FRAME the frame index the click is on (default 0)")
    x, y, label, obj = match.groups()
    if label not in (None, "0", "1"):
        raise CommandError(f"--click {text!r}: LABEL must be 1 (positive) or 0 (negative), got {label}")
    object_id = 1 if obj is None else int(obj)
    if object_id < 1:
        raise CommandError(f"--click {text!r}: OBJECT must be a positive integer, got {object_id}")
    return ClickSpec(float(x), float(y), label != "0", object_id, frame)


def _click_arg(text: str) -> ClickSpec:
    try:
        return parse_click(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment clicked objects on one frame or a sequence of frames (offline)",
                       description="Read a capture (any format the ingest reads or replays), apply the clicks and "
                                   "run one engine on it, as the worker would. With --frame K, or for a capture of "
                                   "one frame and clicks without FRAME:, one frame: OUT.npz holds per object masks "
                                   "(O,H,W) bool, logits (O,H,W) float32 before thresholding, scores, object_ids, "
                                   "similarity (O,H,W) the spectral similarity map used, spectral_angle_rad (O,H,W) "
                                   "to each object's first positive click, and calibration (the frame's: "
                                   "reflectance or scaled_counts). Otherwise every frame in order, each object's "
                                   "memory carried from frame to frame: masks (T,O,H,W) bool, logits (T,O,H,W) "
                                   f"float32 ({ABSENT_LOGIT:g} on frames before the object's first click), present "
                                   "(T,O) bool, scores (T,O), memory_frames (T,O), frame_ms (T,) per-frame "
                                   "processing time, object_ids, clicks (N,5) [frame,x,y,label,object], and "
                                   "calibration (T,) per frame.")
    common_options(p)
    p.add_argument("input", type=Path, help="capture file or folder (a folder is replayed as the ingest does)")
    p.add_argument("--click", dest="clicks", action="append", type=_click_arg, required=True, metavar=CLICK_METAVAR,
                   help="X column, Y row (original pixels); LABEL 1 positive (default) or 0 negative; OBJECT id "
                        "(default 1); FRAME the frame the click is on (default 0, or the --frame). Repeatable; an "
                        "object's first click must be positive; an object exists from the frame of its first click")
    p.add_argument("--frame", type=int, default=None, metavar="K",
                   help="segment frame K of INPUT only (default: every frame of a capture of several frames, "
                        "frame 0 of a capture of one)")
    p.add_argument("--out", type=Path, required=True, help="result file (.npz)")
    engine_flags(p)
    setting_flag(p, "--reference-radius", "worker.spectral.reference_radius",
                 "clicked neighbourhood averaged into a reference spectrum (0 = the clicked pixel)")
    p.set_defaults(handler=_run)


def read_frame(path: Path, index: int, settings: Settings) -> CubeFrame:
    """Frame ``index`` of the capture at ``path``, normalized exactly as the ingest process does."""
    from ..ingest.formats import ReadOptions, read_capture
    from ..ingest.normalize import Normalizer

    capture = read_capture(path, index, ReadOptions.from_settings(settings.ingest))
    return Normalizer(settings.ingest)(capture, STREAM_ID, index, capture.timestamp_ns or 0)


def read_frames(path: Path, settings: Settings) -> Iterator[CubeFrame]:
    """Every frame of the capture at ``path``, in the order the ingest replays them, normalized as it does and
    read one at a time; frame ``t`` has frame id ``t``. A capture that cannot be read is an error here (a
    sequence with a hole has no frame to put a mask on)."""
    from ..ingest.capture import SourceError
    from ..ingest.formats import ReadOptions, open_captures
    from ..ingest.normalize import Normalizer

    normalizer = Normalizer(settings.ingest)
    for index, item in enumerate(open_captures(path, ReadOptions.from_settings(settings.ingest))):
        if isinstance(item, SourceError):
            raise item
        yield normalizer(item, STREAM_ID, index, item.timestamp_ns or 0)


def count_frames(path: Path, settings: Settings, at_most: int) -> int:
    """How many frames the capture at ``path`` holds, counting no further than ``at_most`` (captures are read,
    not normalized); a capture that cannot be read is an error."""
    from ..ingest.capture import SourceError
    from ..ingest.formats import ReadOptions, open_captures

    held = 0
    for item in itertools.islice(open_captures(path, ReadOptions.from_settings(settings.ingest)), at_most):
        if isinstance(item, SourceError):
            raise item
        held += 1
    return held


def _check_inside(spec: ClickSpec, w: int, h: int) -> None:
    if not (0 <= round(spec.x) < w and 0 <= round(spec.y) < h):
        raise CommandError(f"click {spec} is outside the {w}x{h} image "
                           f"(X is the column 0..{w - 1}, Y the row 0..{h - 1})")


def _build_engine(worker: WorkerSettings) -> Engine:
    from ..worker.engines import EngineError, make_engine

    if worker.engine != "spectral" and worker.checkpoint is None and not worker.random_weights:
        raise EngineError(f"engine {worker.engine!r} needs --checkpoint PATH (an official SAM2/SAM2.1 checkpoint) "
                          "or, for tests only, --random-weights")
    return make_engine(worker)


@dataclass
class SegmentOutput:
    masks: np.ndarray
    logits: np.ndarray
    scores: np.ndarray
    object_ids: np.ndarray
    similarity: np.ndarray
    spectral_angle_rad: np.ndarray
    engine: str
    notices: list[str]


def segment_frame(settings: Settings, frame: CubeFrame, clicks: list[ClickSpec]) -> SegmentOutput:
    """Apply ``clicks`` to ``frame`` and run the engine ``settings.worker.engine`` names."""
    from ..spectral.angles import reference_spectrum, spectral_angles
    from ..worker.engines import ObjectMemory
    from ..worker.engines.spectral import SpectralEngine
    from ..worker.prompts import Click, PromptBook

    worker = settings.worker
    engine = _build_engine(worker)
    h, w = frame.cube.shape[:2]
    book = PromptBook()
    wavelengths = np.asarray(frame.wavelengths_nm, dtype=np.float64)
    for spec in clicks:
        _check_inside(spec, w, h)
        reference = reference_spectrum(frame.cube, spec.x, spec.y, worker.spectral.reference_radius)
        book.add_click(spec.object_id, Click(spec.x, spec.y, spec.positive, frame.frame_id, reference, wavelengths))
    ctx = engine.prepare(frame)
    fallback: tuple[Any, Any] | None = None  # the spectral engine and its context, for engines without a map (rgb)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("masks", "logits", "similarity", "angle")}
    scores: list[float] = []
    for _, obj in sorted(book.objects.items()):
        seg = engine.segment(ctx, obj, ObjectMemory())
        similarity = seg.similarity
        if similarity is None:  # the map the engine would have used: the spectral engine's
            if fallback is None:
                spectral = SpectralEngine(worker.spectral)
                fallback = (spectral, spectral.prepare(frame))
            similarity = fallback[0].similarity(fallback[1], obj)[0]
        logits = seg.logits if seg.logits is not None else np.where(seg.mask, 1.0, -1.0)
        out["masks"].append(seg.mask.astype(bool))
        out["logits"].append(np.asarray(logits, dtype=np.float32))
        scores.append(float(seg.score))
        out["similarity"].append(np.asarray(similarity, dtype=np.float32))
        out["angle"].append(spectral_angles(frame.cube, obj.positives[0].reference)[..., 0])
    return SegmentOutput(masks=np.stack(out["masks"]), logits=np.stack(out["logits"]),
                         scores=np.asarray(scores, dtype=np.float32),
                         object_ids=np.asarray(sorted(book.objects), dtype=np.int32),
                         similarity=np.stack(out["similarity"]), spectral_angle_rad=np.stack(out["angle"]),
                         engine=engine.name, notices=list(engine.notices))


@dataclass
class SequenceOutput:
    masks: np.ndarray  # (T, O, H, W) bool
    logits: np.ndarray  # (T, O, H, W) float32; ABSENT_LOGIT before an object's first click
    present: np.ndarray  # (T, O) bool
    scores: np.ndarray  # (T, O) float32
    memory_frames: np.ndarray  # (T, O) int32
    frame_ms: np.ndarray  # (T,) float64: prepare + every object's segment (0 on frames before the first click)
    object_ids: np.ndarray  # (O,) int32
    calibration: list[str]  # per frame
    uncalibrated_how: dict[str, str]  # calibration state -> how the first frame in it was calibrated
    wavelengths_nm: np.ndarray  # of the first frame
    engine: str
    notices: list[str]


def segment_sequence(settings: Settings, frames: Iterable[CubeFrame], clicks: list[ClickSpec]) -> SequenceOutput:
    """Run the engine ``settings.worker.engine`` names over ``frames`` in order, as the worker runs a live
    stream: one prompt book, one memory per object carried from frame to frame; the clicks on frame ``t``
    (``ClickSpec.frame``, None = 0) are applied when frame ``t`` arrives, before it is segmented. An object
    has an empty mask, logits ``ABSENT_LOGIT``, ``present`` False and no memory before its first click."""
    from ..spectral.angles import SpectralError, reference_spectrum
    from ..worker.engines import ObjectMemory, Segmentation
    from ..worker.prompts import Click, PromptBook, PromptError

    worker = settings.worker
    engine = _build_engine(worker)
    object_ids = sorted({c.object_id for c in clicks})
    on_frame: dict[int, list[ClickSpec]] = {}
    for spec in clicks:
        on_frame.setdefault(spec.frame or 0, []).append(spec)
    book = PromptBook()
    memory = {oid: ObjectMemory() for oid in object_ids}
    per_frame: dict[str, list[np.ndarray]] = {k: [] for k in ("masks", "logits", "present", "scores", "memory")}
    frame_ms: list[float] = []
    calibration: list[str] = []
    uncalibrated: dict[str, str] = {}
    wavelengths: np.ndarray | None = None
    shape: tuple[int, int] | None = None
    try:
        for t, frame in enumerate(frames):
            h, w = frame.cube.shape[:2]
            if shape is None:
                shape, wavelengths = (h, w), np.asarray(frame.wavelengths_nm, dtype=np.float64)
            elif (h, w) != shape:
                raise CommandError(f"frame {t} is {w}x{h} but frame 0 is {shape[1]}x{shape[0]}: the frames of a "
                                   "sequence must share one image size")
            frame_wavelengths = np.asarray(frame.wavelengths_nm, dtype=np.float64)
            for spec in on_frame.get(t, ()):
                _check_inside(spec, w, h)
                reference = reference_spectrum(frame.cube, spec.x, spec.y, worker.spectral.reference_radius)
                book.add_click(spec.object_id,
                               Click(spec.x, spec.y, spec.positive, frame.frame_id, reference, frame_wavelengths))
            calibration.append(frame.calibration)
            if frame.calibration != "reflectance":
                uncalibrated.setdefault(frame.calibration, str(frame.source.get("calibrated_with")))
            segs: list[Segmentation | None] = []
            elapsed_ms = 0.0
            if book.objects:  # as the worker: a frame with no object yet is not prepared
                started = time.perf_counter()
                ctx = engine.prepare(frame)
                for oid in object_ids:
                    obj = book.objects.get(oid)
                    if obj is None:
                        segs.append(None)
                        continue
                    try:
                        segs.append(engine.segment(ctx, obj, memory[oid]))
                    except (PromptError, SpectralError) as exc:
                        raise CommandError(f"frame {t}, object {oid}: {exc}") from exc
                elapsed_ms = (time.perf_counter() - started) * 1e3
            else:
                segs = [None] * len(object_ids)
            frame_ms.append(elapsed_ms)
            absent = np.zeros((h, w), dtype=bool)
            per_frame["masks"].append(np.stack([absent if s is None else s.mask.astype(bool) for s in segs]))
            per_frame["logits"].append(np.stack([
                np.full((h, w), ABSENT_LOGIT, dtype=np.float32) if s is None
                else np.asarray(s.logits if s.logits is not None else np.where(s.mask, 1.0, -1.0), dtype=np.float32)
                for s in segs]))
            per_frame["present"].append(np.asarray([s is not None and bool(s.present) for s in segs], dtype=bool))
            per_frame["scores"].append(np.asarray([0.0 if s is None else s.score for s in segs], dtype=np.float32))
            per_frame["memory"].append(np.asarray([0 if s is None else s.memory_frames for s in segs], dtype=np.int32))
    finally:
        engine.forget(STREAM_ID)
    if shape is None or wavelengths is None:
        raise CommandError("the input holds no frames")
    stacked = {k: np.stack(v) for k, v in per_frame.items()}
    per_frame.clear()  # the per-frame copies go before the result is written
    return SequenceOutput(masks=stacked["masks"], logits=stacked["logits"], present=stacked["present"],
                          scores=stacked["scores"], memory_frames=stacked["memory"],
                          frame_ms=np.asarray(frame_ms, dtype=np.float64),
                          object_ids=np.asarray(object_ids, dtype=np.int32), calibration=calibration,
                          uncalibrated_how=uncalibrated, wavelengths_nm=wavelengths, engine=engine.name,
                          notices=list(engine.notices))


def _save(path: Path, **arrays: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)
    except OSError as exc:
        raise CommandError(f"{path}: cannot be written ({exc.strerror or exc})") from exc


def _emit(summary: dict[str, Any]) -> None:
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


def _run(args: argparse.Namespace) -> int:
    from ..runtime import setup_logging

    settings = settings_from(args)
    setup_logging(settings.log.level, "segment", settings.log.format)
    if args.out.suffix != ".npz":
        raise CommandError(f"--out must name a .npz file, got {args.out}")
    clicks: list[ClickSpec] = args.clicks
    if args.frame is not None:
        for spec in clicks:
            if spec.frame is not None and spec.frame != args.frame:
                raise CommandError(f"click {spec} is on frame {spec.frame}, but --frame {args.frame} segments frame "
                                   f"{args.frame} only (leave out --frame to segment every frame)")
        return _run_frame(args, settings, args.frame)
    last = max((c.frame for c in clicks if c.frame is not None), default=None)
    held = count_frames(args.input, settings, at_most=max(2, (last or 0) + 1))
    if last is not None and last >= held:
        beyond = next(c for c in clicks if c.frame == last)
        raise CommandError(f"click {beyond} is on frame {last}, but {args.input} holds {held} frame(s) "
                           f"(0..{held - 1})")
    if last is None and held == 1:
        return _run_frame(args, settings, 0)
    return _run_sequence(args, settings)


def _run_frame(args: argparse.Namespace, settings: Settings, index: int) -> int:
    frame = read_frame(args.input, index, settings)
    result = segment_frame(settings, frame, args.clicks)
    notices = list(result.notices)
    if frame.calibration != "reflectance":
        how = frame.source.get("calibrated_with")
        notices.append(f"frame is {frame.calibration}, not calibrated reflectance ({how})")
    for notice in notices:
        log.warning("notice: %s", notice)
    clicks = np.asarray([[c.x, c.y, int(c.positive), c.object_id] for c in args.clicks], dtype=np.float64)
    _save(args.out, masks=result.masks, logits=result.logits, scores=result.scores,
          object_ids=result.object_ids, similarity=result.similarity,
          spectral_angle_rad=result.spectral_angle_rad, clicks=clicks, frame=np.int64(index),
          engine=np.str_(result.engine), notices=np.asarray(notices, dtype=np.str_),
          rgb=frame.rgb, wavelengths_nm=frame.wavelengths_nm, calibration=np.str_(frame.calibration))
    _emit({"out": str(args.out), "engine": result.engine, "frame": index, "calibration": frame.calibration,
           "image": [int(frame.cube.shape[0]), int(frame.cube.shape[1]), int(frame.cube.shape[2])],
           "objects": [{"id": int(oid), "area_px": int(m.sum()), "score": round(float(s), 4)}
                       for oid, m, s in zip(result.object_ids, result.masks, result.scores, strict=True)],
           "notices": notices})
    return 0


def _run_sequence(args: argparse.Namespace, settings: Settings) -> int:
    result = segment_sequence(settings, read_frames(args.input, settings), args.clicks)
    frames = len(result.calibration)
    notices = list(result.notices)
    for state, how in result.uncalibrated_how.items():
        count = result.calibration.count(state)
        notices.append(f"{count} of {frames} frame(s) are {state}, not calibrated reflectance ({how})")
    for notice in notices:
        log.warning("notice: %s", notice)
    clicks = np.asarray([[c.frame or 0, c.x, c.y, int(c.positive), c.object_id] for c in args.clicks],
                        dtype=np.float64)
    _save(args.out, masks=result.masks, logits=result.logits, present=result.present, scores=result.scores,
          memory_frames=result.memory_frames, frame_ms=result.frame_ms, object_ids=result.object_ids,
          clicks=clicks, engine=np.str_(result.engine), notices=np.asarray(notices, dtype=np.str_),
          wavelengths_nm=result.wavelengths_nm, calibration=np.asarray(result.calibration, dtype=np.str_))
    areas = result.masks.sum(axis=(2, 3))  # (T, O)
    objects = []
    for o, oid in enumerate(result.object_ids):
        present = result.present[:, o]
        objects.append({"id": int(oid), "frames_present": int(present.sum()),
                        "mean_area_px": round(float(areas[present, o].mean()), 1) if present.any() else 0.0})
    _emit({"out": str(args.out), "engine": result.engine, "frames": frames,
           "image": [int(d) for d in result.masks.shape[2:]] + [int(result.wavelengths_nm.size)],
           "calibration": sorted(set(result.calibration)), "objects": objects,
           "median_frame_ms": round(float(np.median(result.frame_ms)), 3), "notices": notices})
    return 0
