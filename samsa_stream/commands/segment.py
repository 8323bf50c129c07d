"""``samsa-stream segment``: run any engine on one frame of a capture, offline, and save the result.

The same ingest (readers + normalizer) and engines as the live node, without sockets: for
evaluating engines on recorded data and for checking a checkpoint or adapter before deployment.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cli import common_options, setting_flag, settings_from
from ..errors import CommandError
from .worker import engine_flags

if TYPE_CHECKING:
    from ..protocol import CubeFrame
    from ..settings import Settings

log = logging.getLogger(__name__)

_CLICK = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?),\s*([-+]?\d+(?:\.\d*)?)(?:,\s*(\d+))?(?:@(\d+))?\s*$")
CLICK_FORMAT = "X,Y[,LABEL][@OBJECT]"


@dataclass(frozen=True)
class ClickSpec:
    """One ``--click``: column x, row y (original pixels), positive or negative, object id."""

    x: float
    y: float
    positive: bool = True
    object_id: int = 1


def parse_click(text: str) -> ClickSpec:
    """``'120,64'``, ``'120,64,0'``, ``'120,64,1@2'`` -> ClickSpec; CommandError naming the problem."""
    match = _CLICK.match(text)
    if match is None:
        raise CommandError(f"--click {text!r} must be {CLICK_FORMAT}: X the column and Y the row in image pixels, "
                         "LABEL 1 (positive, default) or 0 (negative), OBJECT a positive integer (default 1)")
    x, y, label, obj = match.groups()
    if label not in (None, "0", "1"):
        raise CommandError(f"--click {text!r}: LABEL must be 1 (positive) or 0 (negative), got {label}")
    object_id = 1 if obj is None else int(obj)
    if object_id < 1:
        raise CommandError(f"--click {text!r}: OBJECT must be a positive integer, got {object_id}")
    return ClickSpec(float(x), float(y), label != "0", object_id)


def _click_arg(text: str) -> ClickSpec:
    try:
        return parse_click(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment clicked objects on one frame of a capture (offline)",
                       description="Read frame K of a capture (any format the ingest reads), apply the clicks and "
                                   "run one engine on it, as the worker would. OUT.npz holds per object: masks (O,H,W) "
                                   "bool, logits (O,H,W) float32 before thresholding, scores, object_ids, similarity "
                                   "(O,H,W) the spectral similarity map used, spectral_angle_rad (O,H,W) to each "
                                   "object's first positive click, and calibration (the frame's: reflectance or "
                                   "scaled_counts).")
    common_options(p)
    p.add_argument("input", type=Path, help="capture file or folder")
    p.add_argument("--click", dest="clicks", action="append", type=_click_arg, required=True, metavar=CLICK_FORMAT,
                   help="X column, Y row (original pixels); LABEL 1 positive (default) or 0 negative; OBJECT id "
                        "(default 1). Repeatable; an object's first click must be positive")
    p.add_argument("--frame", type=int, default=0, help="frame index within INPUT (default 0)")
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
    return Normalizer(settings.ingest)(capture, "segment", index, capture.timestamp_ns or 0)


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
    from ..worker.engines import EngineError, ObjectMemory, make_engine
    from ..worker.engines.spectral import SpectralEngine
    from ..worker.prompts import Click, PromptBook

    worker = settings.worker
    if worker.engine != "spectral" and worker.checkpoint is None and not worker.random_weights:
        raise EngineError(f"engine {worker.engine!r} needs --checkpoint PATH (an official SAM2/SAM2.1 checkpoint) "
                          "or, for tests only, --random-weights")
    h, w = frame.cube.shape[:2]
    book = PromptBook()
    wavelengths = np.asarray(frame.wavelengths_nm, dtype=np.float64)
    for spec in clicks:
        if not (0 <= round(spec.x) < w and 0 <= round(spec.y) < h):
            raise CommandError(f"click {spec.x:g},{spec.y:g} is outside the {w}x{h} image "
                             f"(X is the column 0..{w - 1}, Y the row 0..{h - 1})")
        reference = reference_spectrum(frame.cube, spec.x, spec.y, worker.spectral.reference_radius)
        book.add_click(spec.object_id, Click(spec.x, spec.y, spec.positive, frame.frame_id, reference, wavelengths))
    engine = make_engine(worker)
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


def _run(args: argparse.Namespace) -> int:
    from ..runtime import setup_logging

    settings = settings_from(args)
    setup_logging(settings.log.level, "segment")
    if args.out.suffix != ".npz":
        raise CommandError(f"--out must name a .npz file, got {args.out}")
    frame = read_frame(args.input, args.frame, settings)
    result = segment_frame(settings, frame, args.clicks)
    notices = list(result.notices)
    if frame.calibration != "reflectance":
        how = frame.source.get("calibrated_with")
        notices.append(f"frame is {frame.calibration}, not calibrated reflectance ({how})")
    for notice in notices:
        log.warning("notice: %s", notice)
    clicks = np.asarray([[c.x, c.y, int(c.positive), c.object_id] for c in args.clicks], dtype=np.float64)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, masks=result.masks, logits=result.logits, scores=result.scores,
                            object_ids=result.object_ids, similarity=result.similarity,
                            spectral_angle_rad=result.spectral_angle_rad, clicks=clicks, frame=np.int64(args.frame),
                            engine=np.str_(result.engine), notices=np.asarray(notices, dtype=np.str_),
                            rgb=frame.rgb, wavelengths_nm=frame.wavelengths_nm, calibration=np.str_(frame.calibration))
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot be written ({exc.strerror or exc})") from exc
    summary = {"out": str(args.out), "engine": result.engine, "frame": args.frame, "calibration": frame.calibration,
               "image": [int(frame.cube.shape[0]), int(frame.cube.shape[1]), int(frame.cube.shape[2])],
               "objects": [{"id": int(oid), "area_px": int(m.sum()), "score": round(float(s), 4)}
                           for oid, m, s in zip(result.object_ids, result.masks, result.scores, strict=True)],
               "notices": notices}
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0
