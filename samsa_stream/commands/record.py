"""``samsa-stream record``: a session's frames, prompts and results into an MCAP recording."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

from ..cli import common_options, setting_flag, settings_from
from ..errors import CommandError
from ._process import run_process

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """``4096``, ``4k``, ``4MiB``, ``2G``... as a number of bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or a number with k, M, G, T)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record a session (frames, prompts, masks, overlays) into MCAP",
                       description="Subscribe to a running node (frames on endpoints.frames, broadcasts on "
                                   "endpoints.broadcast) and write every frame, prompt event, mask message, stream "
                                   "info and overlay into one MCAP file, channel /<stream>/<kind>. A slow disk "
                                   "costs recorded messages (counted), never the live path. SIGINT, SIGTERM or "
                                   "--duration end the recording with a complete, indexed file. See "
                                   "docs/recording.md.")
    common_options(p)
    p.add_argument("--out", type=Path, required=True, metavar="SESSION.mcap",
                   help="the recording; a rollover continues in SESSION-0001.mcap, SESSION-0002.mcap, ...")
    p.add_argument("--duration", type=float, default=0.0, metavar="S",
                   help="stop after S seconds (default: until SIGINT or SIGTERM)")
    p.add_argument("--streams", metavar="cam0,cam1", help="record only these streams (default: every stream)")
    setting_flag(p, "--compress", "record.compression", "chunk compression: none (default), lz4, or zstd (smaller, "
                 "slower: for archiving)", choices=["none", "lz4", "zstd"])
    setting_flag(p, "--cube-every", "record.cube_every", "record every Nth frame of each stream (default 1: all)",
                 metavar="N")
    setting_flag(p, "--cube-dtype", "record.cube_dtype", "store cubes as this type (default: as the node sends them)",
                 choices=["float32", "float16"])
    setting_flag(p, "--max-bytes", "record.max_bytes", "roll over to the next file before one grows past SIZE "
                 "(e.g. 4G; default: no limit)", type=byte_size, metavar="SIZE")
    setting_flag(p, "--max-seconds", "record.max_seconds", "roll over to the next file after S seconds "
                 "(default: no limit)", metavar="S")
    setting_flag(p, "--chunk-bytes", "record.chunk_bytes", "MCAP chunk size: what a crash can lose at most "
                 "(default 4MiB)", type=byte_size, metavar="SIZE")
    setting_flag(p, "--fsync", "record.fsync", "sync every chunk to disk (survives a power loss; costs a disk flush "
                 "per chunk)", switch=True)
    setting_flag(p, "--queue-bytes", "record.queue_bytes", "frames waiting for the disk before new ones are dropped "
                 "(default 512MiB)", type=byte_size, metavar="SIZE")
    setting_flag(p, "--queue-messages", "record.queue_messages", "other messages waiting for the disk (default 1000)",
                 metavar="N")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..recording.recorder import RecordOptions, run_record
    from ..recording.writer import WriterOptions

    streams = None
    if args.streams is not None:
        streams = tuple(s.strip() for s in args.streams.split(",") if s.strip())
        if not streams:
            raise CommandError(f"--streams {args.streams!r} names no stream")
    cfg = settings_from(args).record
    options = RecordOptions(
        out=args.out, duration_s=args.duration, streams=streams, cube_every=cfg.cube_every,
        cube_dtype=cfg.cube_dtype, queue_bytes=cfg.queue_bytes, queue_messages=cfg.queue_messages,
        writer=WriterOptions(compression=cfg.compression, chunk_bytes=cfg.chunk_bytes, max_bytes=cfg.max_bytes,
                             max_seconds=cfg.max_seconds, fsync=cfg.fsync))
    options.check_out()  # found now, before any socket is opened
    return run_process("record", args, functools.partial(run_record, options=options))
