"""``samsa-stream view``: the reference display (window or headless recorder)."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="show a stream's overlay; clicks become prompts",
                       description="Subscribe to one stream's masks and overlays. In a window: left click = positive "
                                   "click, right click = negative click, n = new object, u = undo, r = reset, "
                                   "q = quit. Headless (--headless --out DIR): write overlay PNGs and masks.jsonl.")
    common_options(p)
    setting_flag(p, "--stream", "view.stream_id", "stream to show (default cam0)")
    setting_flag(p, "--headless", "view.headless", "no window: record what arrives", switch=True)
    setting_flag(p, "--out", "view.out", "folder for overlay PNGs and masks.jsonl")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..display.viewer import run_view

    return run_process("view", args, run_view)
