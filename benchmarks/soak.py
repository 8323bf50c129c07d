"""Soak: the node at a steady frame rate with two objects on the phantom, for a long time, to show
whether memory, open files or latency creep.

After ``--warmup-s`` at speed, every ``--interval-s`` (default a minute) it samples each process's
resident memory and open file descriptors (from /proc) and the worker's latency percentiles (its
status reply's ``latency_ms``), appends one line to DIR/soak.jsonl, and at the end prints (and
writes to DIR/soak.json) the least-squares slope per process: RSS in MiB/min, fds per minute, and
p95 latency in ms/min. Flat is near 0; a leak is a slope that stays positive as the run gets longer.

    python benchmarks/soak.py --minutes 60 --fps 10 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from samsa_stream.display.console import PromptConsole
from samsa_stream.display.subscriber import Subscriber
from samsa_stream.errors import SamsaError
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, wait_until

PROCESSES = ("publisher", "worker", "ingest")
LATENCIES = ("capture_to_worker_out", "segment", "frame_link", "wait")


def phantom_overrides(fps: float, height: int, width: int, bands: int) -> dict[str, Any]:
    return {"ingest": {"fps": fps, "phantom": {"height": height, "width": width, "bands": bands, "motion_px": 1.5}},
            "log": {"level": "WARNING", "stats_interval_s": 10.0}}


def proc_sample(pid: int) -> dict[str, float] | None:
    """Resident memory (MiB) and open file descriptors of ``pid``, or None once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    if rss_kib is None:  # a zombie has no VmRSS
        return None
    return {"rss_mib": round(rss_kib / 1024, 2), "fds": fds}


def slope_per_min(times_s: list[float], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against time, per minute; None with fewer than two distinct times."""
    if len(times_s) < 2 or max(times_s) - min(times_s) <= 0:
        return None
    t = np.asarray(times_s, dtype=np.float64) / 60.0
    return round(float(np.polyfit(t, np.asarray(values, dtype=np.float64), 1)[0]), 4) + 0.0  # no -0.0


def worker_status(console: PromptConsole, timeout_ms: int = 2000) -> dict[str, Any] | None:
    """The worker's status reply, or None when it does not answer in time."""
    try:
        reply = console.request("status", timeout_ms=timeout_ms)
    except SamsaError:
        return None
    return reply.state if reply.ok else None


def newest_frame(console: PromptConsole, stream: str = "cam0") -> int | None:
    state = worker_status(console)
    if state is None:
        return None
    value = state.get("streams", {}).get(stream, {}).get("last_frame_id")
    return value if isinstance(value, int) else None


def click_objects(node: LocalNode, console: PromptConsole, count: int, timeout_s: float = 60.0) -> list[int]:
    """Click the centre of phantom objects 1..count on the newest frame; the ids the worker took.
    Raises SamsaError when no frame reaches the worker or a click is refused within ``timeout_s``."""
    found: list[int] = []

    def has_frame() -> bool:
        fid = newest_frame(console)
        if fid is not None:
            found.append(fid)
        return fid is not None

    if not wait_until(has_frame, timeout=timeout_s, interval=0.2):
        raise SamsaError(f"no frame reached the worker within {timeout_s:.0f} s")
    cam = PhantomCamera(node.settings.ingest.phantom)
    clicked = []
    for oid in range(1, count + 1):
        reply = console.click(oid, *cam.centre(oid - 1, found[-1]), frame_id=found[-1], label=f"object {oid}")
        if not reply.ok:
            raise SamsaError(f"click on object {oid} refused: {reply.error}")
        clicked.append(oid)
    return clicked


def wait_for_masks(display: Subscriber, ids: set[int], timeout_s: float) -> bool:
    """Whether a mask message holding every one of ``ids`` arrives within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        update = display.receive(200)
        if update is not None and update.masks is not None and ids <= {o.object_id for o in update.masks.objects}:
            return True
    return False


def sample(node: LocalNode, console: PromptConsole, started: float) -> dict[str, Any]:
    row: dict[str, Any] = {"t_s": round(time.monotonic() - started, 1), "processes": {}}
    for name in PROCESSES:
        proc = node.procs.get(name)
        row["processes"][name] = None if proc is None or proc.poll() is not None else proc_sample(proc.pid)
    state = worker_status(console)
    if state is not None:
        row["worker_latency_ms"] = {k: v for k, v in state.get("latency_ms", {}).items() if k in LATENCIES}
        counters = state.get("counters", {})
        row["worker_counters"] = {k: counters.get(k, 0) for k in
                                  ("frames_processed", "frames_dropped", "results_sent", "results_dropped")}
    else:
        row["worker_latency_ms"] = None
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(rows), "minutes": round(rows[-1]["t_s"] / 60, 2) if rows else 0,
                           "slopes": {}}
    for name in PROCESSES:
        pts = [(r["t_s"], r["processes"][name]) for r in rows if r["processes"].get(name)]
        ts = [t for t, _ in pts]
        out["slopes"][name] = {
            "rss_mib_per_min": slope_per_min(ts, [p["rss_mib"] for _, p in pts]),
            "fds_per_min": slope_per_min(ts, [p["fds"] for _, p in pts]),
            "rss_mib_first_last": [pts[0][1]["rss_mib"], pts[-1][1]["rss_mib"]] if pts else None,
            "fds_first_last": [pts[0][1]["fds"], pts[-1][1]["fds"]] if pts else None,
        }
    for stage in ("capture_to_worker_out", "segment"):
        pts2 = [(r["t_s"], r["worker_latency_ms"][stage]["p95"]) for r in rows
                if r.get("worker_latency_ms") and r["worker_latency_ms"].get(stage, {}).get("count")]
        out["slopes"]["worker"][f"{stage}_p95_ms_per_min"] = slope_per_min([t for t, _ in pts2], [v for _, v in pts2])
        out["slopes"]["worker"][f"{stage}_p95_ms_first_last"] = [pts2[0][1], pts2[-1][1]] if pts2 else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--warmup-s", type=float, default=60.0,
                    help="seconds at speed before the first sample (allocator pools, latency windows filling)")
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--bands", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "soak.jsonl"
    jsonl.write_text("")
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    overrides = phantom_overrides(args.fps, args.height, args.width, args.bands)
    with LocalNode(overrides, run_dir=args.out / "run") as node:
        for name in PROCESSES:
            node.start(name)
        console = PromptConsole(node.settings, "cam0")
        display = Subscriber(node.settings, ["cam0"], kinds=("mask",))
        try:
            ids = click_objects(node, console, 2)
            if not wait_for_masks(display, set(ids), 60):
                failures.append("no mask with both objects within 60 s of the clicks")
            warm_until = time.monotonic() + args.warmup_s
            while time.monotonic() < warm_until:
                display.drain()
                time.sleep(0.2)
            started = time.monotonic()
            end = started + args.minutes * 60
            next_sample = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    row = sample(node, console, started)
                    rows.append(row)
                    with jsonl.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    dead = [n for n in PROCESSES if not node.running(n)]
                    if dead:
                        failures.append(f"process(es) ended during the soak: {', '.join(dead)}")
                        break
                    if now >= end:
                        break
                    next_sample = min(next_sample + args.interval_s, end)
                display.drain()  # a display that keeps up, so the broadcast never backs up on it
                time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
        except SamsaError as exc:
            failures.append(str(exc))
        finally:
            display.close()
            console.close()
    result = {"minutes": args.minutes, "fps": args.fps, "interval_s": args.interval_s, "warmup_s": args.warmup_s,
              "phantom": [args.height, args.width, args.bands], **summarize(rows), "failures": failures}
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
