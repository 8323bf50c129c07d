"""``samsa-stream publisher``: results -> mask and overlay broadcasts."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publisher", help="broadcast masks and overlays to every display",
                       description="Receive results from the worker (PULL, endpoints.results), encode masks "
                                   "(run-length) and overlays (JPEG/PNG), and broadcast them on topics "
                                   "mask/<stream>/ and overlay/<stream>/ (XPUB, endpoints.broadcast). A display "
                                   "that subscribes late gets the latest state at once.")
    common_options(p)
    setting_flag(p, "--overlay-format", "publisher.overlay_format", "jpeg (default) or png")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..publisher.process import run_publisher

    return run_process("publisher", args, run_publisher)
