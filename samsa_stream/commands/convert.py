"""``samsa-stream convert``: any supported capture -> the normalized form the node ingests."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cli import common_options, setting_flag, settings_from
from ..errors import CommandError
from ..ingest.capture import REFLECTANCE, SourceError

if TYPE_CHECKING:
    from ..protocol import CubeFrame
    from ..settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a capture to normalized reflectance (.npz, or ENVI .hdr)",
                       description="Read INPUT (any supported capture file or folder), normalize it exactly as the "
                                   "ingest process does (calibration, binning, band range, resampling; settings "
                                   "apply) and write OUTPUT. OUTPUT.npz holds 'cube' (H, W, B) float32 reflectance, "
                                   "'wavelengths_nm' (B,), 'rgb' (H, W, 3) uint8, 'labels' (H, W) when the source "
                                   "has a label map, and 'source_json' (the capture's metadata); with --all, "
                                   "'cubes' (T, H, W, B), 'rgb' (T, H, W, 3) and 'labels' (T, H, W). OUTPUT.hdr "
                                   "writes the cube as ENVI (float32, bsq, wavelengths in nm). INPUT may be a session "
                                   "recording (.mcap): its recorded cubes as they are, OUTPUT.npz with 'cubes' (T, H, "
                                   "W, B), 'rgb' (T, H, W, 3), 'wavelengths_nm', 'frame_ids' (T,), 'capture_ns' (T,) "
                                   "and 'labels' (T, H, W) when every frame has a label map (an .npz the ingest "
                                   "replays as it is); --frame K takes frame id K alone (the single-frame layout, "
                                   "or ENVI).")
    common_options(p)
    p.add_argument("input", type=Path, help="capture file (.hdr, .dat, .npy, .npz) or folder, or SESSION.mcap")
    p.add_argument("output", type=Path, help="OUTPUT.npz (normalized form) or OUTPUT.hdr (ENVI)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--frame", type=int, help="which capture of a multi-capture input (0-based)")
    which.add_argument("--all", action="store_true", help="every capture, stacked (same shape; held in memory)")
    p.add_argument("--compress", action="store_true", help="zip-compress the .npz (smaller, slower)")
    setting_flag(p, "--dtype", "ingest.dtype", "cube dtype: float32 (default) or float16")
    p.add_argument("--stream", help="a recording with several streams: the stream to extract")
    p.set_defaults(handler=_run)


def _frames(args: argparse.Namespace, settings: Settings) -> list[CubeFrame]:
    """The chosen capture(s) of the input, normalized."""
    from ..ingest.formats import ReadOptions, open_captures, read_capture
    from ..ingest.normalize import Normalizer

    options = ReadOptions.from_settings(settings.ingest)
    normalizer = Normalizer(settings.ingest)
    if args.all:
        frames = []
        for index, item in enumerate(open_captures(args.input, options)):
            if isinstance(item, SourceError):
                raise item
            frames.append(normalizer(item, "convert", index, item.timestamp_ns or 0))
        return frames
    if args.frame is None and len(list(itertools.islice(open_captures(args.input, options), 2))) > 1:
        raise CommandError(f"{args.input}: holds more than one capture; choose one with --frame N or stack them "
                           "with --all")
    index = args.frame or 0
    capture = read_capture(args.input, index, options)
    return [normalizer(capture, "convert", index, capture.timestamp_ns or 0)]


def _write(args: argparse.Namespace, frames: list[CubeFrame]) -> None:
    from ..ingest.formats.envi import write_envi

    first = frames[0]
    calibration = first.calibration
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix.lower() == ".hdr":
        if len(frames) > 1:
            raise CommandError(f"{args.output}: an ENVI file holds one cube; choose one with --frame N")
        if calibration != REFLECTANCE:
            # ENVI float data reads back as reflectance: the uncalibrated mark would be lost.
            raise CommandError(f"{args.output}: the frame is {calibration} (not reflectance), which an ENVI "
                               "file cannot record; write OUTPUT.npz")
        write_envi(args.output, first.cube, first.wavelengths_nm, dtype=first.cube.dtype,
                   description=f"samsa-stream convert of {args.input}")
        return
    arrays: dict[str, Any] = {"wavelengths_nm": first.wavelengths_nm, "calibration": np.array(calibration),
                              "source_json": np.array(json.dumps([f.source for f in frames], default=str))}
    if len(frames) == 1:
        arrays |= {"cube": first.cube, "rgb": first.rgb}
        if first.labels is not None:
            arrays["labels"] = first.labels
    else:
        arrays |= {"cubes": np.stack([f.cube for f in frames]), "rgb": np.stack([f.rgb for f in frames])}
        labels = [f.labels for f in frames if f.labels is not None]
        if len(labels) == len(frames):
            arrays["labels"] = np.stack(labels)
    (np.savez_compressed if args.compress else np.savez)(args.output, **arrays)


def _recorded(args: argparse.Namespace) -> list[CubeFrame]:
    """The recorded cubes of a recording's stream (``--frame``: that frame id alone)."""
    from ..recording.reader import Recording, recorded_frames

    recording = Recording(args.input)
    streams = sorted({e.stream for e in recording.entries(("frame",))})
    if not streams:
        raise CommandError(f"{args.input}: the recording holds no frames")
    stream = args.stream or streams[0]
    if args.stream is None and len(streams) > 1:
        raise CommandError(f"{args.input}: holds streams {', '.join(streams)}; choose one with --stream")
    if stream not in streams:
        raise CommandError(f"{args.input}: no frames of stream {stream!r} (streams: {', '.join(streams)})")
    frames = [f for f in recorded_frames(recording, stream) if args.frame is None or f.frame_id == args.frame]
    if not frames:
        what = f"frame {args.frame} of {stream}" if args.frame is not None else f"any frame of {stream}"
        raise CommandError(f"{args.input}: no cube recorded for {what}")
    return frames


def _write_recorded(args: argparse.Namespace, frames: list[CubeFrame]) -> None:
    if args.output.suffix.lower() != ".npz":
        raise CommandError(f"{args.output}: an ENVI file holds one cube; choose one with --frame K or write .npz")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"cubes": np.stack([f.cube for f in frames]), "rgb": np.stack([f.rgb for f in frames]),
              "wavelengths_nm": frames[0].wavelengths_nm, "calibration": np.array(frames[0].calibration),
              "frame_ids": np.array([f.frame_id for f in frames], np.int64),
              "capture_ns": np.array([f.capture_ns for f in frames], np.int64),
              "stream": np.array(frames[0].stream_id),
              "source_json": np.array(json.dumps([f.source for f in frames], default=str))}
    labels = [f.labels for f in frames if f.labels is not None]
    if len(labels) == len(frames):
        arrays["labels"] = np.stack(labels)
    (np.savez_compressed if args.compress else np.savez)(args.output, **arrays)


def _run(args: argparse.Namespace) -> int:
    from ..recording.reader import is_recording

    if args.output.suffix.lower() not in (".npz", ".hdr"):
        raise CommandError(f"{args.output}: OUTPUT must end in .npz (normalized form) or .hdr (ENVI)")
    recording = is_recording(args.input)
    frames = _recorded(args) if recording else _frames(args, settings_from(args))
    first = frames[0]
    if any(f.cube.shape != first.cube.shape or not np.array_equal(f.wavelengths_nm, first.wavelengths_nm)
           for f in frames):
        raise CommandError(f"{args.input}: --all needs every capture to have the same shape and wavelengths")
    if any(f.calibration != first.calibration for f in frames):
        raise CommandError(f"{args.input}: --all needs every capture in the same calibration state; got "
                           f"{sorted({f.calibration for f in frames})}")
    try:
        if recording and args.frame is None:
            _write_recorded(args, frames)
        else:
            _write(args, frames)
    except OSError as exc:
        raise CommandError(f"{args.output}: cannot be written ({exc.strerror or exc})") from exc
    h, w, b = first.cube.shape
    wl = first.wavelengths_nm
    state = "reflectance" if first.calibration == REFLECTANCE else f"{first.calibration} (not reflectance)"
    print(f"wrote {args.output}: {len(frames)} frame(s), {h} x {w} x {b} {first.cube.dtype} {state}, "
          f"{wl[0]:g}-{wl[-1]:g} nm, label map: {'yes' if first.labels is not None else 'no'}")
    return 0
