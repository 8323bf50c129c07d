"""``samsa-stream status``: ask a running worker for its counters, latencies and prompt state, and
the publisher (its ``stream`` messages) for each stream's displays and liveness."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from ..cli import common_options, settings_from

if TYPE_CHECKING:
    from ..settings import Settings

# The worker's per-stage latencies (Worker.status), in pipeline order.
STAGES = (("frame_link", "frame link (ingest_out -> worker_in)"), ("wait", "waiting (worker_in -> segmentation)"),
          ("segment", "segmentation (start -> worker_out)"), ("capture_to_worker_out", "capture -> worker_out"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a running worker's counters, latencies and objects",
                       description="Send a status request to the worker (endpoints.prompts) and print its reply: "
                                   "frames received, processed, dropped and rejected, per-stage latencies "
                                   "(p50/p95/max over the last 1000 frames), recent errors, and each stream's "
                                   "objects and clicks; then, from the publisher's broadcast, each stream's "
                                   "displays connected and whether it is live or stale. Exits 1 when the worker "
                                   "does not answer.")
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
    state = dict(reply.state)
    state["publisher_streams"] = publisher_streams(settings, min(args.timeout, 1500))
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print(format_status(state, settings.endpoints.prompts))
    return 0


def publisher_streams(settings: Settings, timeout_ms: int) -> dict[str, dict[str, Any]]:
    """Each stream's newest ``stream`` message from the publisher (its last-value replay), as a map:
    displays, stale, age_ms, frame_id, engine. Empty when the publisher sends none within ``timeout_ms``."""
    from ..display.subscriber import Subscriber

    found: dict[str, dict[str, Any]] = {}
    with Subscriber(settings, None, kinds=("stream",)) as subscriber:
        deadline = time.monotonic() + timeout_ms / 1000
        quiet_ms = 300  # the replay comes as one burst; stop once it is over
        while (left := deadline - time.monotonic()) > 0:
            update = subscriber.receive(int(min(left * 1000, quiet_ms if found else left * 1000)))
            if update is None:
                if found:
                    break
                continue
            info = update.info
            if info is not None:
                found[info.stream_id] = {"displays": info.displays, "stale": info.stale, "age_ms": info.age_ms,
                                         "frame_id": info.frame_id, "engine": info.engine}
    return found


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
    published = state.get("publisher_streams")
    if published == {}:
        lines.append("  publisher: no stream info received (publisher down, or no result yet)")
    for stream, info in sorted((published or {}).items()):
        live = "STALE" if info.get("stale") else "live"
        lines.append(f"  publisher stream {stream}: {live}, {info.get('displays')} display(s) subscribed, "
                     f"newest frame {info.get('frame_id')}")
    for error in state.get("recent_errors", [])[-5:]:
        lines.append(f"  recent error: {error}")
    return "\n".join(lines)
