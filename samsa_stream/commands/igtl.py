"""``samsa-stream igtl``: serve one stream's masks to OpenIGTLink clients (3D Slicer)."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("igtl", help="serve a stream's masks as OpenIGTLink label maps (3D Slicer)",
                       description="Subscribe to one stream's masks and serve them to OpenIGTLink clients (3D "
                                   "Slicer's OpenIGTLinkIF connects as a client): a uint8 label map per mask "
                                   "message (IMAGE, device igtl.label_device, value = object id), optionally the "
                                   "RGB overlay (igtl.send_overlay), and a STRING status (device SamsaStatus). "
                                   "No label map goes out while the stream is stale. See docs/igtl.md.")
    common_options(p)
    setting_flag(p, "--port", "igtl.port", "TCP port to listen on (default 18944)")
    setting_flag(p, "--stream", "igtl.stream_id", "stream to serve (default cam0)")
    setting_flag(p, "--overlay", "igtl.send_overlay", "also send the RGB overlay", switch=True)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..igtl.bridge import run_igtl

    return run_process("igtl", args, run_igtl)
