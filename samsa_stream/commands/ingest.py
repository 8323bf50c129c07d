"""``samsa-stream ingest``: camera or recording -> normalized frames on the frame link."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="read a camera or recording and publish normalized frames",
                       description="Read a source (a camera plugin such as the synthetic phantom, a recorded capture "
                                   "file or folder, or a folder a camera writes into), normalize each capture to a "
                                   "wavelength-tagged reflectance cube with a pseudo-RGB rendering, and publish it on "
                                   "the frame link (PUB, endpoints.frames). A capture that cannot be read or used is "
                                   "counted and skipped.")
    common_options(p)
    setting_flag(p, "--source", "ingest.source", "'phantom', 'plugin:NAME' or a path to a capture file or folder")
    setting_flag(p, "--stream", "ingest.stream_id", "stream id of the frames (default cam0)")
    setting_flag(p, "--fps", "ingest.fps", "frames per second for the phantom and 'fixed' pace")
    setting_flag(p, "--frames", "ingest.frames", "stop after this many frames (0 = until stopped)")
    setting_flag(p, "--pace", "ingest.pace", "replay pace: fixed (fps), recorded (capture times) or fast")
    setting_flag(p, "--loop", "ingest.loop", "restart a replay at its end", switch=True)
    setting_flag(p, "--watch", "ingest.watch", "--source is a folder: ingest each new capture written into it",
                 switch=True)
    setting_flag(p, "--endpoint", "endpoints.frames", "frame link endpoint to bind (e.g. tcp://*:5555)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..ingest.process import run_ingest

    return run_process("ingest", args, run_ingest)
