"""``samsa-stream prompt``: send one prompt request to the worker, without a window.

For scripts and operators: ``samsa-stream prompt --stream cam0 click 120,64`` clicks like the
viewer does; ``undo``, ``remove``, ``reset`` and ``state`` do what the viewer's keys do. Exit 0
when the worker applied the request, 1 when it refused (the reason on stderr) or did not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..cli import common_options
from ..errors import SamsaError
from .segment import CLICK_FORMAT, ClickSpec, parse_click


def _click(text: str) -> ClickSpec:
    try:
        return parse_click(text)
    except (SamsaError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--click ")) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _reply_options(parser: argparse.ArgumentParser, before_op: bool) -> None:
    """Options accepted before the op (with their defaults) and after it (set only when given there)."""
    defaults: dict[str, Any] = ({"stream": "cam0", "json": False, "timeout": None} if before_op
                                else dict.fromkeys(("stream", "json", "timeout"), argparse.SUPPRESS))
    parser.add_argument("--stream", default=defaults["stream"], help="stream the request applies to (default cam0)")
    parser.add_argument("--json", action="store_true", default=defaults["json"],
                        help="print the worker's reply as JSON")
    parser.add_argument("--timeout", type=_positive, default=defaults["timeout"], metavar="MS",
                        help="milliseconds to wait for the reply (default sockets.reply_timeout_ms)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompt", help="send a click, undo, remove, reset or state request to the worker",
                       description="Send one prompt request to the worker (endpoints.prompts) and print its reply: "
                                   "the stream's objects and their clicks. Exit 0 when applied, 1 when the worker "
                                   "refused it (the reason is printed) or did not answer.")
    common_options(p)
    _reply_options(p, before_op=True)
    ops = p.add_subparsers(dest="op", metavar="OP", required=True)
    click = ops.add_parser("click", help="a positive or negative click on an object",
                           description="X the column and Y the row in image pixels; LABEL 1 positive (default) or 0 "
                                       "negative; OBJECT the object id (default 1; a new id makes a new object, whose "
                                       "first click must be positive).")
    click.add_argument("click", type=_click, metavar=CLICK_FORMAT)
    click.add_argument("--frame", type=int, help="the frame the click refers to (default: the newest)")
    click.add_argument("--name", help="the object's name shown on displays")
    undo = ops.add_parser("undo", help="remove the last click (of OBJECT, if given)")
    undo.add_argument("object_id", type=_positive, nargs="?", metavar="OBJECT")
    remove = ops.add_parser("remove", help="delete an object")
    remove.add_argument("object_id", type=_positive, metavar="OBJECT")
    ops.add_parser("reset", help="delete every object of the stream")
    ops.add_parser("state", help="show the stream's objects and clicks")
    for op in ops.choices.values():
        _reply_options(op, before_op=False)
    p.set_defaults(handler=_run)


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.op == "click":
        spec: ClickSpec = args.click
        return {"object_id": spec.object_id, "x": spec.x, "y": spec.y, "positive": spec.positive,
                "frame_id": args.frame, "label": args.name}
    if args.op in ("undo", "remove"):
        return {"object_id": args.object_id}
    return {}


def describe(state: dict[str, Any]) -> list[str]:
    """The stream's objects and clicks, one line per object."""
    lines = []
    for obj in state.get("objects", []):
        clicks = " ".join(f"{'+' if c.get('positive') else '-'}({c.get('x'):g}, {c.get('y'):g})"
                          for c in obj.get("clicks", []))
        name = f" {obj['label']!r}" if obj.get("label") else ""
        lines.append(f"  object {obj.get('id')}{name}: {clicks or 'no clicks'}")
    return lines or ["  no objects"]


def _run(args: argparse.Namespace) -> int:
    from ..cli import settings_from
    from ..display.console import PromptConsole, PromptTimeout
    from ..errors import CommandError, ProtocolError
    from ..protocol import check_stream_id

    try:
        stream = check_stream_id(args.stream, "--stream")
    except ProtocolError as exc:
        raise CommandError(str(exc)) from None
    settings = settings_from(args)
    console = PromptConsole(settings, stream)
    try:
        reply = console.request(args.op, timeout_ms=args.timeout, **_fields(args))
    except PromptTimeout as exc:
        raise CommandError(str(exc)) from None
    finally:
        console.close()
    if args.json:
        print(json.dumps({"request_id": reply.request_id, "ok": reply.ok, "error": reply.error, "state": reply.state,
                          "warnings": reply.warnings}, indent=2))
    else:
        verdict = "ok" if reply.ok else "refused"
        print(f"{args.op} on {stream}: {verdict} (revision {reply.state.get('revision', '?')})")
        print("\n".join(describe(reply.state)))
        for warning in reply.warnings:
            print(f"warning: {warning}")
    if not reply.ok:
        print(f"samsa-stream prompt: the worker refused {args.op}: {reply.error}", file=sys.stderr)
        return 1
    return 0
