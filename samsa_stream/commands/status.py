"""``samsa-stream status``: ask a running worker for its counters, latencies and prompt state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli import common_options, settings_from

# The worker's per-stage latencies (Worker.status), in pipeline order.
STAGES = (("frame_link", "frame link (ingest_out -> worker_in)"), ("wait", "waiting (worker_in -> segmentation)"),
          ("segment", "segmentation (start -> worker_out)"), ("capture_to_worker_out", "capture -> worker_out"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a running worker's counters, latencies and objects",
                       description="Send a status request to the worker (endpoints.prompts) and print its reply: "
                                   "frames received, processed, dropped and rejected, per-stage latencies "
                                   "(p50/p95/max over the last 1000 frames), recent errors, and each stream's "
                                   "objects and clicks. Exits 1 when the worker does not answer.")
    common_options(p)
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    p.add_argument("--timeout", type=int, default=2000, help="milliseconds to wait for the worker (default 2000)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..display.console import PromptConsole

    settings = settings_from(args)
    console = PromptConsole(settings, stream_id="")
    try:
        reply = console.request("status", timeout_ms=args.timeout)  # PromptTimeout: the CLI prints it, exit 1
    finally:
        console.close()
    if args.json:
        print(json.dumps(reply.state, indent=2))
    else:
        print(format_status(reply.state, settings.endpoints.prompts))
    return 0


def format_status(state: dict[str, Any], endpoint: str) -> str:
    """The status reply as text for a person: counters, latencies, streams, the last errors."""
    lines = [f"worker at {endpoint}: engine {state.get('engine')}, up {state.get('uptime_s')} s"]
    for name, value in sorted(state.get("counters", {}).items()):
        lines.append(f"  {name:24s} {value}")
    latency = state.get("latency_ms", {})
    for key, what in STAGES:
        figures = latency.get(key, {})
        if figures.get("count"):
            lines.append(f"  latency {what}: p50 {figures.get('p50')} ms, p95 {figures.get('p95')} ms, "
                         f"max {figures.get('max')} ms ({figures['count']} frames)")
        else:
            lines.append(f"  latency {what}: no frames yet")
    for stream, info in sorted(state.get("streams", {}).items()):
        objects = ", ".join(f"{o.get('id')} {o.get('label')!r} ({o.get('click_count', len(o.get('clicks', [])))} "
                            "click(s))" for o in info.get("objects", []))
        if not objects and info.get("object_count"):
            objects = f"{info['object_count']} object(s), {info.get('click_count')} click(s)"
        lines.append(f"  stream {stream}: last frame {info.get('last_frame_id')}; objects: {objects or 'none'}")
    for error in state.get("recent_errors", [])[-5:]:
        lines.append(f"  recent error: {error}")
    return "\n".join(lines)
