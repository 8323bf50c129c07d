"""Chaos: the node on the phantom under faults, at random, for a while; prints what it survived.

Runs a LocalNode (publisher, worker with the spectral engine and ``worker.state_file``, ingest at
``--fps``, a headless ``view``), clicks two objects, then at random intervals does one of:

- kill: SIGKILL a process (ingest, worker, publisher, view: each once per round, in a random order)
  and start it again. Measured:
  how long until masks resume (ms, and frame periods at ``--fps``), found from the hop timestamps
  (the first mask whose killed stage stamped it after the kill); for a worker, whether every
  clicked object is back without a new click (restored from the state file).
- stall: a display that subscribes to everything and stops reading for a while (RCVHWM 1);
  the healthy display's mask rate during the stall is recorded.
- burst: the camera goes away and an impostor sender binds the frame endpoint (as a second
  ingest would), sends a burst of valid frames as fast as it can, interleaved with malformed
  ones (random bytes, truncated messages, wrong types, bad cube_ref), then leaves and the real
  ingest starts again. The worker's rejection and drop counters are recorded.
- prompts: malformed prompt requests (random bytes, truncated and mutated valid prompts) to the
  worker's ROUTER; every one must get a reply.
- results: malformed messages to the publisher's results PULL.
- upstream: malformed messages upstream on the broadcast XPUB (from an XSUB).

Every wait has a deadline: a fault that is not recovered from is reported, not waited on forever.
At the end it prints JSON and writes DIR/chaos.json: frames processed, resume times per process
killed (p50/p95/max), objects restored after each worker kill, and each process's RSS and open file
descriptors (/proc) over its longest life without a kill (first, last, least-squares slope per min).

    python benchmarks/chaos.py --minutes 30 --out /tmp/chaos
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from samsa_stream.display.console import PromptConsole
from samsa_stream.display.subscriber import Subscriber
from samsa_stream.errors import SamsaError
from samsa_stream.ingest.normalize import Normalizer
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode
from samsa_stream.protocol import ClickPrompt, now_ns, topic
from samsa_stream.protocol.mutations import Mangler
from samsa_stream.settings import IngestSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import click_objects, proc_sample, slope_per_min, wait_for_masks, worker_status  # noqa: E402

PROCESSES = ("publisher", "worker", "ingest", "view")
KILLED_HOP = {"ingest": "ingest_out", "worker": "worker_out", "publisher": "publisher_out"}
OBJECTS = 2
RESUME_DEADLINE_S = 60.0
ACTIONS = {"kill": 0.5, "stall": 0.12, "burst": 0.1, "prompts": 0.1, "results": 0.09, "upstream": 0.09}
WORKER_COUNTERS = ("frames_received", "frames_rejected", "frames_processed", "frames_dropped", "prompts_rejected",
                   "frames_lapped", "frame_decoder_faults")


@dataclass
class Seen:
    received: float  # monotonic s
    frame_id: int
    ids: frozenset[int]
    hops: dict[str, int]


@dataclass
class Monitor:
    """A healthy display in its own thread: every mask message of cam0, when it arrived and what it held."""

    node: LocalNode
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            with Subscriber(self.node.settings, ["cam0"], kinds=("mask",)) as display:
                while not self.stop.is_set():
                    update = display.receive(100)
                    if update is not None and update.masks is not None:
                        m = update.masks
                        self.seen.append(Seen(time.monotonic(), m.frame_id,
                                              frozenset(o.object_id for o in m.objects),
                                              {str(h[0]): int(h[1]) for h in m.hops}))
        except Exception as exc:  # reported in the figures, never a hang
            self.error = f"{type(exc).__name__}: {exc}"

    def after(self, since: float) -> list[Seen]:
        return [s for s in list(self.seen) if s.received >= since]


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.mangler = Mangler(args.seed)
        self.out: Path = args.out
        run = self.out / "run"
        self.view_dir = self.out / "view"
        overrides = {"ingest": {"fps": args.fps, "phantom": {"height": args.height, "width": args.width,
                                                             "bands": args.bands, "motion_px": 1.5}},
                     "worker": {"engine": "spectral", "state_file": str(run / "prompts.json")},
                     "log": {"level": "WARNING", "stats_interval_s": 10.0}}
        self.node = LocalNode(overrides, run_dir=run)
        self.monitor = Monitor(self.node)
        self.failures: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.samples: list[tuple[float, str, int, dict[str, float]]] = []  # (t, process, pid, sample)
        self.stalled: list[tuple[float, zmq.Socket]] = []  # (when to close, socket)
        self.ctx = zmq.Context()
        self.kill_order: list[str] = []  # every process is killed once per round, in a random order
        self.console: PromptConsole | None = None
        self.worker_processed = 0  # frames_processed of worker runs that were killed
        self.counters: Counter[str] = Counter()  # rejections counted by the worker across bursts
        self.started = time.monotonic()
        self._last_sample = 0.0
        cam = PhantomCamera(self.node.settings.ingest.phantom)
        norm = Normalizer(IngestSettings())
        self.valid_frames = [norm(cam.render(k), "cam0", k, 0) for k in range(8)]

    # -- helpers ---------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        if name == "view":
            self.node.start("view", "--headless", "--out", str(self.view_dir))
        else:
            self.node.start(name)

    def status(self) -> dict[str, Any] | None:
        assert self.console is not None
        return worker_status(self.console)

    def pump(self) -> None:
        """Housekeeping between steps: close stalled displays that are due; sample the processes."""
        now = time.monotonic()
        for due, sock in [s for s in self.stalled if s[0] <= now]:
            sock.close(0)
            self.stalled.remove((due, sock))
        if now - self._last_sample >= self.args.sample_s:
            self._last_sample = now
            for name in PROCESSES:
                proc = self.node.procs.get(name)
                if proc is not None and proc.poll() is None:
                    got = proc_sample(proc.pid)
                    if got is not None:
                        self.samples.append((now - self.started, name, proc.pid, got))

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.pump()
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    def raw(self, kind: int, endpoint: str, bind: bool = False) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        (sock.bind if bind else sock.connect)(endpoint)
        return sock

    def garbage(self, valid: list[bytes]) -> list[bytes]:
        """One malformed multipart message, made from ``valid`` or from nothing."""
        return self.mangler(valid)

    # -- actions ---------------------------------------------------------------------------------
    def kill(self, name: str) -> dict[str, Any]:
        event: dict[str, Any] = {"action": "kill", "process": name}
        if name == "worker":
            state = self.status()
            if state is not None:
                self.worker_processed += int(state.get("counters", {}).get("frames_processed", 0))
        view_log = self.view_dir / "masks.jsonl"
        kill_wall = time.time_ns()
        killed_at = time.monotonic()
        self.node.kill(name)
        self.start(name)
        if name == "view":
            size = view_log.stat().st_size if view_log.exists() else 0
            ok = self.wait_for(lambda: view_log.exists() and view_log.stat().st_size > size, RESUME_DEADLINE_S)
            event.update(resumed=ok, resume_ms=round((time.monotonic() - killed_at) * 1000, 1) if ok else None)
        else:
            hop = KILLED_HOP[name]

            def resumed() -> Seen | None:
                return next((s for s in self.monitor.after(killed_at) if s.ids and s.hops.get(hop, 0) > kill_wall),
                            None)

            ok = self.wait_for(lambda: resumed() is not None, RESUME_DEADLINE_S)
            first = resumed()
            if first is not None:
                ms = (first.received - killed_at) * 1000
                event.update(resumed=True, resume_ms=round(ms, 1), resume_frames=round(ms * self.args.fps / 1000, 1))
            else:
                event.update(resumed=False)
        if not event["resumed"]:
            self.failures.append(f"masks did not resume within {RESUME_DEADLINE_S:.0f} s after killing {name}")
        if name == "worker":
            want = frozenset(range(1, OBJECTS + 1))
            back = self.wait_for(lambda: any(want <= s.ids and s.hops.get("worker_out", 0) > kill_wall
                                             for s in self.monitor.after(killed_at)), RESUME_DEADLINE_S)
            event["objects_back"] = back  # no click was sent since the kill: restored from the state file
            if not back:
                self.failures.append(f"objects {sorted(want)} not all back {RESUME_DEADLINE_S:.0f} s after a worker "
                                     "kill")
        return event

    def stall(self) -> dict[str, Any]:
        seconds = self.rng.uniform(5, 20)
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.node.settings.endpoints.broadcast)
        self.stalled.append((time.monotonic() + seconds, sock))
        return {"action": "stall", "seconds": round(seconds, 1)}

    def burst(self) -> dict[str, Any]:
        """The camera goes; an impostor binds the frame endpoint and floods it; the camera comes back."""
        before = (self.status() or {}).get("counters", {})
        self.node.kill("ingest")
        sent = bad = 0
        sock = self.raw(zmq.PUB, self.node.settings.endpoints.frames, bind=True)
        try:
            sock.setsockopt(zmq.SNDHWM, 1000)
            self.sleep(0.5)  # the worker's SUB reconnects to the new binder
            base = self.rng.randrange(10**6, 10**7)
            for i in range(self.args.burst):
                frame = self.valid_frames[i % len(self.valid_frames)]
                frame.frame_id, frame.capture_ns = base + i, now_ns()
                parts = [topic("frame", "cam0"), *[bytes(p) for p in frame.to_parts()]]
                if self.rng.random() < 0.3:
                    parts = [parts[0], *self.garbage(parts[1:])]
                    bad += 1
                try:
                    sock.send_multipart(parts, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
        finally:
            sock.close(0)
        ingest_back = time.monotonic()
        self.start("ingest")
        ok = self.wait_for(lambda: any(s.ids and s.hops.get("ingest_out", 0) > 0 and s.received > ingest_back
                                       and s.frame_id < 10**6 for s in self.monitor.after(ingest_back)),
                           RESUME_DEADLINE_S)
        if not ok:
            self.failures.append("masks did not resume after a frame burst and an ingest restart")
        after = (self.status() or {}).get("counters", {})
        delta = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in WORKER_COUNTERS}
        self.counters.update({f"burst_{k}": v for k, v in delta.items() if v > 0})
        return {"action": "burst", "sent": sent, "malformed": bad, "worker_counters": delta, "resumed": ok,
                "resume_ms": round((time.monotonic() - ingest_back) * 1000, 1)}

    def prompts(self) -> dict[str, Any]:
        valid = [bytes(p) for p in ClickPrompt(stream_id="cam0", request_id=7, object_id=9, x=1.0, y=1.0,
                                               frame_id=0).to_parts()]
        sock = self.raw(zmq.DEALER, self.node.settings.endpoints.prompts)
        count = 50
        replies = 0
        try:
            for _ in range(count):
                sock.send_multipart(self.garbage(valid))
            end = time.monotonic() + 10
            while replies < count and time.monotonic() < end:
                if sock.poll(100):
                    sock.recv_multipart()
                    replies += 1
        finally:
            sock.close(0)
        if replies < count:
            self.failures.append(f"the worker answered {replies} of {count} malformed prompt requests")
        self.counters["malformed_prompts_sent"] += count
        return {"action": "prompts", "sent": count, "replies": replies}

    def results(self) -> dict[str, Any]:
        valid = [msgpack.packb({"v": 1, "type": "result", "stream": "cam0", "frame_id": 1, "capture_ns": 1,
                                "hops": [], "arrays": []})]
        sock = self.raw(zmq.PUSH, self.node.settings.endpoints.results)
        count = 50
        try:
            sock.setsockopt(zmq.SNDTIMEO, 1000)
            for _ in range(count):
                sock.send_multipart(self.garbage(valid))
        except zmq.Again:
            self.failures.append("the publisher's results link did not take 50 malformed messages within 1 s each")
        finally:
            sock.close(0)
        self.counters["malformed_results_sent"] += count
        return {"action": "results", "sent": count}

    def upstream(self) -> dict[str, Any]:
        sock = self.raw(zmq.XSUB, self.node.settings.endpoints.broadcast)
        count = 50
        try:
            for _ in range(count):
                r = self.rng.random()
                msg = (b"\x01" + self.rng.randbytes(self.rng.randrange(0, 300)) if r < 0.4 else
                       b"\x00" + self.rng.randbytes(self.rng.randrange(0, 40)) if r < 0.6 else
                       self.rng.randbytes(self.rng.randrange(0, 64)))
                sock.send(msg)
            self.sleep(0.2)
        finally:
            sock.close(0)
        self.counters["malformed_upstream_sent"] += count
        return {"action": "upstream", "sent": count}

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        for name in ("publisher", "worker", "ingest", "view"):
            self.start(name)
        self.monitor.start()
        self.console = PromptConsole(self.node.settings, "cam0")
        ids = click_objects(self.node, self.console, OBJECTS)
        with Subscriber(self.node.settings, ["cam0"], kinds=("mask",)) as display:
            if not wait_for_masks(display, set(ids), RESUME_DEADLINE_S):
                raise SamsaError("no mask with both clicked objects within 60 s")
        self.started = time.monotonic()
        end = self.started + self.args.minutes * 60
        names = list(ACTIONS)
        weights = [ACTIONS[n] for n in names]
        while time.monotonic() < end:
            gap = self.rng.uniform(self.args.min_gap_s, self.args.max_gap_s)
            self.sleep(min(gap, max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            action = self.rng.choices(names, weights)[0]
            try:
                if action == "kill":
                    if not self.kill_order:
                        self.kill_order = self.rng.sample(PROCESSES, len(PROCESSES))
                    event = self.kill(self.kill_order.pop())
                else:
                    event = getattr(self, action)()
            except Exception as exc:  # a fault in the driver is a finding, not the end of the run
                self.failures.append(f"{action}: {type(exc).__name__}: {exc}")
                event = {"action": action, "error": traceback.format_exc(limit=3)}
            event["t_s"] = round(time.monotonic() - self.started, 1)
            self.events.append(event)
            print(json.dumps(event), file=sys.stderr, flush=True)
        return self.finish()

    def finish(self) -> dict[str, Any]:
        for _, sock in self.stalled:
            sock.close(0)
        self.stalled.clear()
        self._last_sample = 0.0
        self.sleep(self.args.sample_s)  # one more sample of every process
        alive = {name: self.node.running(name) for name in PROCESSES}
        for name, up in alive.items():
            if not up:
                self.failures.append(f"{name} is not running at the end:\n{self.node.log_text(name)[-1500:]}")
        state = self.status()
        if state is None:
            self.failures.append("the worker does not answer a status request at the end")
        since = time.monotonic()
        final_ok = self.wait_for(lambda: any(frozenset(range(1, OBJECTS + 1)) <= s.ids
                                             for s in self.monitor.after(since)), 20)
        if not final_ok:
            self.failures.append("no mask with both objects in the last 20 s")
        if self.monitor.error:
            self.failures.append(f"the monitoring display failed: {self.monitor.error}")
        processed = self.worker_processed + int((state or {}).get("counters", {}).get("frames_processed", 0))
        kills: dict[str, Any] = {}
        for name in PROCESSES:
            mine = [e for e in self.events if e.get("action") == "kill" and e.get("process") == name]
            times = [e["resume_ms"] for e in mine if e.get("resume_ms") is not None]
            entry: dict[str, Any] = {"kills": len(mine), "resumed": sum(bool(e.get("resumed")) for e in mine)}
            if times:
                arr = np.asarray(times)
                entry["resume_ms"] = {"p50": round(float(np.percentile(arr, 50)), 1),
                                      "p95": round(float(np.percentile(arr, 95)), 1), "max": round(float(arr.max()), 1)}
                frames = [e["resume_frames"] for e in mine if e.get("resume_frames") is not None]
                if frames:
                    entry["resume_frames"] = {"p50": round(float(np.percentile(frames, 50)), 1),
                                              "p95": round(float(np.percentile(frames, 95)), 1),
                                              "max": float(max(frames))}
            if name == "worker":
                entry["objects_back_after_every_kill"] = all(e.get("objects_back") for e in mine) if mine else None
            kills[name] = entry
        result = {"minutes": self.args.minutes, "seed": self.args.seed, "fps": self.args.fps,
                  "frames_processed": processed, "masks_seen_by_display": len(self.monitor.seen),
                  "actions": dict(Counter(e["action"] for e in self.events)), "kills": kills,
                  "stalls": self._stalls(), "counters": dict(self.counters), "leaks": self._leaks(),
                  "all_running_at_end": all(alive.values()), "failures": self.failures, "events": self.events}
        return result

    def _stalls(self) -> list[dict[str, Any]]:
        """The healthy display's masks per second while each stalled display was stalled."""
        out = []
        for e in self.events:
            if e.get("action") != "stall":
                continue
            t0 = self.started + e["t_s"]
            got = [s for s in self.monitor.seen if t0 <= s.received < t0 + e["seconds"]]
            out.append({"t_s": e["t_s"], "seconds": e["seconds"], "healthy_display_masks_per_s":
                        round(len(got) / e["seconds"], 2)})
        return out

    def _leaks(self) -> dict[str, Any]:
        """Per process, its longest life in this run (one pid): RSS and fds first, last and slope per min,
        leaving out the first ``warmup`` seconds after a start."""
        out: dict[str, Any] = {}
        for name in PROCESSES:
            lives: dict[int, list[tuple[float, dict[str, float]]]] = {}
            for t, proc, pid, s in self.samples:
                if proc == name:
                    lives.setdefault(pid, []).append((t, s))
            best: list[tuple[float, dict[str, float]]] = []
            for life in lives.values():
                warm = [(t, s) for t, s in life if t - life[0][0] >= self.args.warmup_s]
                if len(warm) >= 2 and (not best or warm[-1][0] - warm[0][0] > best[-1][0] - best[0][0]):
                    best = warm
            if not best:
                out[name] = {"span_s": 0, "note": "no life long enough to judge (killed too often)"}
                continue
            ts = [t for t, _ in best]
            out[name] = {"span_s": round(ts[-1] - ts[0], 1), "lives": len(lives),
                         "rss_mib_first_last": [best[0][1]["rss_mib"], best[-1][1]["rss_mib"]],
                         "rss_mib_per_min": slope_per_min(ts, [s["rss_mib"] for _, s in best]),
                         "fds_first_last": [best[0][1]["fds"], best[-1][1]["fds"]],
                         "fds_per_min": slope_per_min(ts, [s["fds"] for _, s in best])}
        return out

    def close(self) -> None:
        self.monitor.stop.set()
        if self.console is not None:
            self.console.close()
        for _, sock in self.stalled:
            sock.close(0)
        self.ctx.term()
        self.node.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--height", type=int, default=60)
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--bands", type=int, default=24)
    ap.add_argument("--min-gap-s", type=float, default=4.0, help="shortest pause between two faults")
    ap.add_argument("--max-gap-s", type=float, default=12.0, help="longest pause between two faults")
    ap.add_argument("--burst", type=int, default=300, help="frames an impostor sender floods the link with")
    ap.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS/fd samples")
    ap.add_argument("--warmup-s", type=float, default=15.0, help="seconds after a start left out of leak slopes")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    chaos = Chaos(args)
    # A wedged run still ends: the watchdog writes what is known and exits.
    hard_limit = args.minutes * 60 + 600

    def watchdog() -> None:
        time.sleep(hard_limit)
        chaos.failures.append(f"the run did not end within {hard_limit:.0f} s; stopped by the watchdog")
        (args.out / "chaos.json").write_text(json.dumps({"failures": chaos.failures, "events": chaos.events},
                                                        indent=2, default=str))
        print(json.dumps({"failures": chaos.failures}, indent=2), flush=True)
        for proc in chaos.node.procs.values():  # no process of this run outlives it
            proc.kill()
        os._exit(2)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        result = chaos.run()
    except Exception as exc:
        chaos.failures.append(f"{type(exc).__name__}: {exc}")
        result = {"failures": chaos.failures, "events": chaos.events, "error": traceback.format_exc(limit=5)}
    finally:
        chaos.close()
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 1 if result.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
