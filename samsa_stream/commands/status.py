"""``samsa-stream status``: ask a running worker for its counters, latencies and prompt state."""

from __future__ import annotations

import argparse
import json

from ..cli import common_options, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a running worker's counters, latencies and objects",
                       description="Send a status request to the worker (endpoints.prompts) and print its reply: "
                                   "frames received, processed, dropped and rejected, recent errors, and each "
                                   "stream's objects and clicks. Exits 1 when the worker does not answer.")
    common_options(p)
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    p.add_argument("--timeout", type=int, default=2000, help="milliseconds to wait for the worker (default 2000)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..display.console import PromptConsole, PromptTimeout

    settings = settings_from(args)
    console = PromptConsole(settings, stream_id="")
    try:
        reply = console.request("status", timeout_ms=args.timeout)
    except PromptTimeout as exc:
        raise RuntimeError(str(exc)) from None
    finally:
        console.close()
    state = reply.state
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(f"worker at {settings.endpoints.prompts}: engine {state.get('engine')}, up {state.get('uptime_s')} s")
    for name, value in sorted(state.get("counters", {}).items()):
        print(f"  {name:24s} {value}")
    for stream, info in sorted(state.get("streams", {}).items()):
        objects = ", ".join(f"{o['id']} {o['label']!r} ({len(o['clicks'])} click(s))" for o in info.get("objects", []))
        print(f"  stream {stream}: last frame {info.get('last_frame_id')}; objects: {objects or 'none'}")
    for error in state.get("recent_errors", [])[-5:]:
        print(f"  recent error: {error}")
    return 0
