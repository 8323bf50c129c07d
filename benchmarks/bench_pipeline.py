"""End-to-end latency of the running node, per stage, for each frame transport, side by side.

Runs the real processes (publisher, worker, ingest with the phantom camera) on this machine,
clicks one object, listens as a display, and reports per-hop latency percentiles from the
messages' hop timestamps. Prints JSON.

    python benchmarks/bench_pipeline.py --height 480 --width 640 --bands 100 --fps 5 --frames 40
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from samsa_stream.display.console import PromptConsole, PromptTimeout
from samsa_stream.display.subscriber import Subscriber
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, wait_until

STAGES = (("ingest", "capture", "ingest_out"), ("frame link", "ingest_out", "worker_in"),
          ("worker", "worker_in", "worker_out"), ("result link", "worker_out", "publisher_in"),
          ("publisher", "publisher_in", "publisher_out"), ("broadcast", "publisher_out", "display"),
          ("end to end", "capture", "display"))

TRANSPORTS = {"ipc+shm": ("ipc", "on"), "ipc": ("ipc", "off"), "tcp": ("tcp", "off")}


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 2), "p95": round(float(np.percentile(arr, 95)), 2),
            "max": round(float(arr.max()), 2), "n": int(arr.size)}


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    transport, shm = TRANSPORTS[name]
    phantom = {"height": args.height, "width": args.width, "bands": args.bands, "noise": 0.01}
    overrides = {"ingest": {"fps": args.fps, "frames": args.frames + 20, "phantom": phantom},
                 "sockets": {"shared_memory": shm}, "log": {"level": "WARNING"}}
    stages: dict[str, list[float]] = {s[0]: [] for s in STAGES}
    with LocalNode(overrides, transport=transport) as node:
        for proc in ("publisher", "worker", "ingest"):
            node.start(proc)
        console = PromptConsole(node.settings, "cam0")
        display = Subscriber(node.settings, ["cam0"], kinds=("mask",))
        try:
            frame_id: list[int] = []
            wait_until(lambda: _latest(console, frame_id), timeout=60, interval=0.2)
            cam = PhantomCamera(node.settings.ingest.phantom)
            x, y = cam.centre(0, frame_id[-1])
            console.click(1, x, y, frame_id=frame_id[-1])
            got, deadline = 0, time.monotonic() + args.frames / args.fps + 60
            while got < args.frames and time.monotonic() < deadline:
                update = display.receive(1000)
                msg = update.masks if update is not None else None
                if msg is None or not msg.objects:
                    continue
                got += 1
                t = {"capture": msg.capture_ns, "display": update.received_ns, **{h: v for h, v in msg.hops}}
                for stage, a, b in STAGES:
                    stages[stage].append((t[b] - t[a]) / 1e6)
            status = console.request("status").state["counters"]
            received = dict(display.stats.counters)
        finally:
            console.close()
            display.close()
    return {"transport": name, "frames_measured": got,
            "latency_ms": {k: percentiles(v) for k, v in stages.items() if v},
            "worker_counters": status, "display_counters": received}


def _latest(console: PromptConsole, out: list[int]) -> bool:
    try:
        fid = console.request("status", timeout_ms=1000).state.get("streams", {}).get("cam0", {}).get("last_frame_id")
    except PromptTimeout:
        return False
    if fid is not None:
        out.append(fid)
    return fid is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=100)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=40, help="frames measured per transport")
    parser.add_argument("--transports", default="ipc+shm,ipc,tcp")
    args = parser.parse_args()
    cube_mib = args.height * args.width * args.bands * 4 / 2**20
    results = [run(name, args) for name in args.transports.split(",")]
    print(json.dumps({"cube": [args.height, args.width, args.bands], "cube_mib": round(cube_mib, 1),
                      "fps": args.fps, "engine": "spectral", "results": results}, indent=2))


if __name__ == "__main__":
    main()
