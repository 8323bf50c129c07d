"""``samsa-stream web``: the browser display (live masks in any browser; clicks become prompts)."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="serve the live masks to browsers; clicks become prompts",
                       description="Subscribe to the broadcast (masks, images, stream info) and serve a page that "
                                   "shows a stream with its masks, legend, latency and a stale marker. Left click = "
                                   "positive click, shift- or right-click = negative, n = new object, u = undo, "
                                   "r = reset, Delete = remove the object. Listens on 127.0.0.1 unless web.host is "
                                   "set; prompts need web.token unless the browser's address is in "
                                   "web.allow_prompts_from (docs/web.md).")
    common_options(p)
    setting_flag(p, "--host", "web.host", "address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    setting_flag(p, "--port", "web.port", "TCP port (default 8080)")
    setting_flag(p, "--stream", "web.stream_id", "stream a page shows first (default cam0)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..web.server import run_web

    return run_process("web", args, run_web)
