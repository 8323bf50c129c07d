"""End-to-end latency of the running node, per stage, for each frame transport, side by side.

`samsa-stream bench --sections node` replaces this script: it runs the same measurement
(``samsa_stream.bench.node``) beside the other sections. This wrapper keeps the old flags and
prints the ``node`` section as JSON.

    python benchmarks/bench_pipeline.py --height 480 --width 640 --bands 100 --fps 5 --frames 40
"""

from __future__ import annotations

import argparse
import json
import sys

from samsa_stream.bench import node
from samsa_stream.bench.options import BenchError, BenchFrames, BenchOptions

# The old transport names, as ``bench`` calls them.
TRANSPORTS = {"ipc+shm": "shm", "shm": "shm", "ipc": "ipc", "tcp": "tcp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=40, help="frames measured per transport")
    parser.add_argument("--transports", default="ipc+shm,ipc,tcp")
    parser.add_argument("--clicks", type=int, default=5, help="click-to-mask samples per transport")
    args = parser.parse_args()
    names = [name.strip() for name in args.transports.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRANSPORTS]
    if unknown:
        parser.error(f"unknown transport(s) {', '.join(unknown)} (known: {', '.join(TRANSPORTS)})")
    print("note: `samsa-stream bench --sections node` replaces this script", file=sys.stderr)
    try:
        options = BenchOptions(size=(args.height, args.width, args.bands), frames=args.frames, fps=(args.fps,),
                               transports=tuple(dict.fromkeys(TRANSPORTS[name] for name in names)),
                               clicks=args.clicks, sections=("node",))
    except BenchError as exc:
        parser.error(str(exc))
    frames = BenchFrames.make(options.size, options.frames)
    section = node.node_section(options, frames, node.worker_overrides(options, options.node_engine),
                                node.carried_settings(options.settings))
    print(json.dumps({"cube": list(options.size), "fps": args.fps, "engine": options.node_engine,
                      "node": section.model_dump(mode="json")}, indent=2))


if __name__ == "__main__":
    main()
