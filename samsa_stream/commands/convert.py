"""``samsa-stream convert``: any supported capture -> the normalized form the node ingests."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import common_options, setting_flag, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a capture to normalized reflectance (.npz, or ENVI .hdr)",
                       description="Read INPUT (any supported capture file or folder), normalize it exactly as the "
                                   "ingest process does (calibration, binning, band range, resampling; settings "
                                   "apply) and write OUTPUT. OUTPUT.npz holds 'cube' (H, W, B) float32 reflectance, "
                                   "'wavelengths_nm' (B,), 'rgb' (H, W, 3) uint8, 'labels' (H, W) when the source "
                                   "has a label map, and 'source_json' (the capture's metadata); with --all, "
                                   "'cubes' (T, H, W, B), 'rgb' (T, H, W, 3) and 'labels' (T, H, W). OUTPUT.hdr "
                                   "writes the cube as ENVI (float32, bsq, wavelengths in nm).")
    common_options(p)
    p.add_argument("input", type=Path, help="capture file (.hdr, .dat, .npy, .npz) or folder")
    p.add_argument("output", type=Path, help="OUTPUT.npz (normalized form) or OUTPUT.hdr (ENVI)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--frame", type=int, help="which capture of a multi-capture input (0-based)")
    which.add_argument("--all", action="store_true", help="every capture, stacked (same shape; held in memory)")
    p.add_argument("--compress", action="store_true", help="zip-compress the .npz (smaller, slower)")
    setting_flag(p, "--dtype", "ingest.dtype", "cube dtype: float32 (default) or float16")
    p.set_defaults(handler=_run)


def _frames(args: argparse.Namespace) -> list[Any]:
    """The chosen capture(s) of the input, normalized."""
    from ..ingest.formats import ReadOptions, open_captures
    from ..ingest.normalize import Normalizer
    from ..ingest.sources import SourceError

    settings = settings_from(args)
    items = open_captures(args.input, ReadOptions.from_settings(settings.ingest))
    if args.all:
        chosen = list(enumerate(items))
    elif args.frame is not None:
        chosen = [(i, c) for i, c in enumerate(itertools.islice(items, args.frame + 1)) if i == args.frame]
        if not chosen:
            raise SourceError(f"{args.input}: has no capture {args.frame} (it holds fewer)")
    else:
        chosen = list(enumerate(itertools.islice(items, 2)))
        if len(chosen) > 1:
            raise SourceError(f"{args.input}: holds more than one capture; choose one with --frame N or stack them "
                              "with --all")
    if not chosen:
        raise SourceError(f"{args.input}: holds no capture")
    normalizer = Normalizer(settings.ingest)
    frames = []
    for index, capture in chosen:
        if isinstance(capture, SourceError):
            raise capture
        frames.append(normalizer(capture, "convert", index, capture.timestamp_ns or 0))
    return frames


def _run(args: argparse.Namespace) -> int:
    from ..ingest.formats.envi import write_envi

    suffix = args.output.suffix.lower()
    if suffix not in (".npz", ".hdr"):
        raise ValueError(f"{args.output}: OUTPUT must end in .npz (normalized form) or .hdr (ENVI)")
    frames = _frames(args)
    first = frames[0]
    if any(f.cube.shape != first.cube.shape or not np.array_equal(f.wavelengths_nm, first.wavelengths_nm)
           for f in frames):
        raise ValueError(f"{args.input}: --all needs every capture to have the same shape and wavelengths")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".hdr":
        if len(frames) > 1:
            raise ValueError(f"{args.output}: an ENVI file holds one cube; choose one with --frame N")
        write_envi(args.output, first.cube, first.wavelengths_nm, dtype=first.cube.dtype,
                   description=f"samsa-stream convert of {args.input}")
    else:
        arrays: dict[str, Any] = {"wavelengths_nm": first.wavelengths_nm,
                                  "calibration": np.array("reflectance"),
                                  "source_json": np.array(json.dumps([f.source for f in frames], default=str))}
        if len(frames) == 1:
            arrays |= {"cube": first.cube, "rgb": first.rgb}
            if first.labels is not None:
                arrays["labels"] = first.labels
        else:
            arrays |= {"cubes": np.stack([f.cube for f in frames]), "rgb": np.stack([f.rgb for f in frames])}
            if all(f.labels is not None for f in frames):
                arrays["labels"] = np.stack([f.labels for f in frames])
        (np.savez_compressed if args.compress else np.savez)(args.output, **arrays)
    h, w, b = first.cube.shape
    wl = first.wavelengths_nm
    print(f"wrote {args.output}: {len(frames)} frame(s), {h} x {w} x {b} {first.cube.dtype} reflectance, "
          f"{wl[0]:g}-{wl[-1]:g} nm, label map: {'yes' if first.labels is not None else 'no'}")
    return 0
