"""``samsa-stream demo``: the whole node on this machine with the phantom camera and scripted clicks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import common_options, setting_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run ingest, worker, publisher and a headless view with scripted clicks",
                       description="Start the publisher, worker, a headless view and ingest (synthetic phantom "
                                   "camera) as separate processes on private endpoints, send scripted clicks (a "
                                   "positive click, a negative click, a second object), run N frames, stop "
                                   "everything and write overlay PNGs and summary.json to --out.")
    common_options(p)
    p.add_argument("--frames", type=int, default=30, help="frames the phantom camera produces (default 30)")
    p.add_argument("--out", type=Path, required=True, help="folder for summary.json, overlays and process logs")
    p.add_argument("--transport", choices=("ipc", "tcp"), default="ipc", help="ipc sockets or tcp on 127.0.0.1")
    p.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    p.add_argument("--clicks", type=Path, help="click script (default config/demo-clicks.toml; docs/replay.md)")
    p.add_argument("--record", type=Path, metavar="SESSION.mcap",
                   help="also record the session (samsa-stream record --out SESSION.mcap as one more process)")
    setting_flag(p, "--fps", "ingest.fps", "phantom frame rate (default 10)")
    setting_flag(p, "--engine", "worker.engine", "segmentation engine (default spectral)")
    setting_flag(p, "--bands", "ingest.phantom.bands", "phantom band count")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import overrides_from, settings_from
    from ..demo import run_demo
    from ..errors import CommandError
    from ..runtime import setup_logging

    if args.frames < 1:
        raise CommandError(f"--frames must be at least 1, got {args.frames}")
    settings = settings_from(args)  # validates every override before any process starts
    setup_logging(settings.log.level, "demo", settings.log.format)
    summary = run_demo(args.frames, args.out, overrides_from(args), transport=args.transport, timeout_s=args.timeout,
                       config=args.config, clicks=args.clicks,
                       record=args.record.resolve() if args.record is not None else None)
    shown = {k: summary[k] for k in ("frames_captured", "frames_processed", "frames_dropped", "masks_published",
                                      "engine", "latency_ms", "iou_vs_phantom", "wall_time_s")}
    print(json.dumps(shown, indent=2))
    print(f"summary: {args.out / 'summary.json'}")
    if args.record is not None:
        print(f"recording: {args.record}")
    return 0
