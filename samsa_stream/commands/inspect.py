"""``samsa-stream inspect``: what a capture file or folder holds, without ingesting it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import common_options, settings_from
from ..ingest.capture import RAW, SCALED_COUNTS, Capture, SourceError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe a capture: format, shape, dtype, wavelengths, calibration",
                       description="Describe every capture in PATH (a capture file or a folder of them): format, "
                                   "shape H x W x B, stored dtype, wavelength range and count, calibration state "
                                   "(reflectance, or raw counts with or without white/dark references), whether a "
                                   "label map is present, and any warnings. Exits 1 when a capture cannot be read. "
                                   "Captures are numbered as --frame counts them in convert and segment. A session "
                                   "recording (.mcap) is summarised instead: streams, duration, frames with and "
                                   "without cubes, prompts applied and refused, objects, masks, what the recorder "
                                   "missed, file size, compression and channels.")
    common_options(p)
    p.add_argument("path", type=Path, help="capture file (.hdr, .dat, .npy, .npz) or folder, or SESSION.mcap")
    p.add_argument("--frame", type=int, help="describe only this capture (0-based, as convert and segment count)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per capture")
    p.set_defaults(handler=_run)


def describe_capture(capture: Capture) -> dict[str, Any]:
    """One capture as a JSON-friendly summary."""
    from ..ingest.normalize import check_wavelengths

    meta = dict(capture.metadata)
    h, w, b = capture.cube.shape if capture.cube.ndim == 3 else (None, None, None)
    wl = np.asarray(capture.wavelengths_nm, dtype=np.float64)
    waves: dict[str, Any] = {"count": int(wl.size)}
    if wl.size:
        waves |= {"first_nm": round(float(wl[0]), 3), "last_nm": round(float(wl[-1]), 3)}
    if wl.size > 1:
        waves["mean_step_nm"] = round(float((wl[-1] - wl[0]) / (wl.size - 1)), 3)
    try:
        check_wavelengths(wl, b or 0, "wavelengths")
    except SourceError as exc:
        waves["problem"] = str(exc)
    if "wavelengths_assumed_nm" in meta:
        waves["assumed"] = True  # the format stores none; from ingest.tivita_wavelength_range_nm
    if capture.calibration == RAW:
        refs = capture.white is not None and capture.dark is not None
        calibration = "raw counts, white/dark references present" if refs else "raw counts, no references"
    elif capture.calibration == SCALED_COUNTS:
        calibration = "raw counts scaled to [0, 1] without references (not reflectance)"
    else:
        scale = meta.get("reflectance_scale_factor")
        calibration = "reflectance" + (f" (stored x {scale:g})" if scale else "")
    out: dict[str, Any] = {
        "path": meta.pop("folder", None) or meta.pop("file", None),
        "format": meta.pop("format", "unknown"),
        "shape": [h, w, b],
        "dtype": meta.pop("stored_dtype", str(capture.cube.dtype)),
        "wavelengths": waves,
        "calibration": calibration,
        "labels": capture.labels is not None,
    }
    if capture.labels is not None:
        out["label_values"] = [int(v) for v in np.unique(capture.labels)[:32]]
    meta.pop("wavelengths_assumed_nm", None)
    meta.pop("fwhm_nm", None)
    out |= {k: v for k, v in meta.items() if k != "data_file"}
    return out


def _text(entry: dict[str, Any]) -> str:
    waves = entry["wavelengths"]
    wl = f"{waves['count']} band(s)"
    if "first_nm" in waves:
        wl += f", {waves['first_nm']:g}-{waves['last_nm']:g} nm"
    if "mean_step_nm" in waves:
        wl += f" (mean step {waves['mean_step_nm']:g} nm)"
    if waves.get("assumed"):
        wl += ", assumed (not stored in the file)"
    if "problem" in waves:
        wl += f"; INVALID: {waves['problem']}"
    fmt = entry["format"]
    extra = [entry["interleave"]] if "interleave" in entry else []
    extra += [f"{entry['byte_order']} endian"] if "byte_order" in entry else []
    h, w, b = entry["shape"]
    rows = [("format", fmt + (f" ({', '.join(map(str, extra))})" if extra else "")),
            ("shape", f"{h} x {w} x {b} (H x W x B)"), ("dtype", entry["dtype"]), ("wavelengths", wl),
            ("calibration", entry["calibration"]),
            ("label map", f"yes, values {entry['label_values']}" if entry["labels"] else "no")]
    if "index" in entry:
        rows.insert(0, ("in file", f"cube {entry['index']}"))
    rows.insert(0, ("capture", str(entry["capture"])))
    if entry.get("bad_bands_dropped"):
        rows.append(("bad bands", f"{entry['bad_bands_dropped']} dropped (bbl)"))
    if "data_ignore_value" in entry:
        rows.append(("ignore value", f"{entry['data_ignore_value']:g} (read as NaN, replaced on ingest)"))
    for warning in entry.get("warnings", []):
        rows.append(("warning", warning))
    return entry["path"] + "\n" + "".join(f"  {k:<13}{v}\n" for k, v in rows)


def _recording_text(info: dict[str, Any]) -> str:
    rows = [("file", f"{info['file_bytes']} bytes, compression {', '.join(info['compression'])}"),
            ("duration", f"{info['duration_s']:g} s, {info['messages']} messages")]
    for stream, s in info["streams"].items():
        ops = ", ".join(f"{op} {n}" for op, n in sorted(s["prompt_ops"].items())) or "none"
        rows += [(f"stream {stream}", f"frames {s['frames']} (with cube: {s['frames_with_cube']}, without cube: "
                                      f"{s['frames_without_cube']}), over {s['capture_span_s']:g} s"),
                 ("", f"masks {s['masks']} (+{s['refresh_masks']} after prompts), objects "
                      f"{', '.join(map(str, s['objects'])) or 'none'}"),
                 ("", f"prompts applied {s['prompts_ok']}, refused {s['prompts_refused']} ({ops})")]
    stats = info["recorder_stats"]
    missed = {k: v for k, v in stats.items() if "miss" in k or "drop" in k}
    rows.append(("recorder", ", ".join(f"{k} {v}" for k, v in sorted(missed.items())) or
                 ("nothing missed" if stats else "no counters recorded")))
    rows += [("channel", f"{c['topic']} ({c['schema']}): {c['messages']}") for c in info["channels"]]
    if info["unreadable"]:
        rows.append(("unreadable", ", ".join(f"{k} {v}" for k, v in info["unreadable"].items())))
    return info["path"] + "\n" + "".join(f"  {k:<16}{v}\n" for k, v in rows)


def _run_recording(args: argparse.Namespace) -> int:
    from ..errors import CommandError
    from ..recording.reader import Recording

    if args.frame is not None:
        raise CommandError("--frame describes one capture; a recording is summarised as a whole")
    info = Recording(args.path).describe()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
    else:
        print(_recording_text(info), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..ingest.formats import ReadOptions, open_captures, read_capture
    from ..recording.reader import is_recording

    if is_recording(args.path):
        return _run_recording(args)

    options = ReadOptions.from_settings(settings_from(args).ingest)
    items: list[Capture | SourceError]
    if args.frame is None:
        items = list(open_captures(args.path, options))
    else:
        try:
            items = [read_capture(args.path, args.frame, options)]
        except SourceError as exc:
            items = [exc]
    first = args.frame or 0
    entries = [{"capture": first + i}
               | ({"error": str(item)} if isinstance(item, SourceError) else describe_capture(item))
               for i, item in enumerate(items)]
    if args.json:
        json.dump(entries, sys.stdout, indent=2)
        print()
    else:
        print("\n".join(_text(e) for e in entries if "error" not in e), end="")
        for entry in entries:
            if "error" in entry:
                print(f"samsa-stream inspect: error: {entry['error']}", file=sys.stderr)
    return 1 if any("error" in e for e in entries) else 0
