"""The one-command demo: the whole node on this machine, the phantom camera, scripted clicks.

Starts publisher, worker, a headless view and ingest as separate processes (and with a recording,
``samsa-stream record``), sends the prompts of config/demo-clicks.toml (a positive click, a negative
click, a second object) as the displays reach their frames, follows the masks against the
phantom's ground truth, stops everything and writes ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .display.console import PromptConsole
from .display.subscriber import Subscriber
from .errors import SamsaError
from .evaluation.metrics import iou
from .ingest.sources.phantom import PhantomCamera
from .node import LocalNode, wait_until
from .protocol import ClickPrompt
from .recording.script import ClickScript, ScriptEntry, background_point, load_script
from .runtime import write_json_atomic

log = logging.getLogger(__name__)


class DemoError(SamsaError, RuntimeError):
    """A demo process failed; the message carries the end of its log."""


# config/demo-clicks.toml, shipped in the package through a link (an installed node has no source tree)
DEMO_CLICKS = Path(__file__).resolve().parent / "data" / "demo-clicks.toml"


def demo_script(path: Path | None = None) -> ClickScript:
    """The demo's scripted prompts: ``path``, else config/demo-clicks.toml."""
    path = path or DEMO_CLICKS
    if not path.is_file():
        raise DemoError(f"the demo's click script {path} does not exist; pass one with --clicks")
    return load_script(path)


def _send(console: PromptConsole, phantom: PhantomCamera, entry: ScriptEntry, frame_id: int) -> dict[str, Any]:
    """Send one scripted prompt on ``frame_id``; clicks placed by ``object_centre`` use the phantom's centres."""

    def place(e: ScriptEntry) -> tuple[float, float]:
        if e.object_centre is not None:
            return phantom.centre(e.object_centre, frame_id)
        return background_point(phantom.labels(frame_id))

    request = entry.request(console.stream_id, frame_id, place)
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)
              if f.name not in ("request_id", "stream_id")}
    reply = console.request(request.OP, **fields)
    log.info("%s on frame %d: %s", entry.action(), frame_id, "ok" if reply.ok else reply.error)
    out: dict[str, Any] = {"action": entry.action(), "frame_id": frame_id, "ok": reply.ok, "error": reply.error}
    if isinstance(request, ClickPrompt):
        out |= {"object_id": request.object_id, "x": round(request.x, 2), "y": round(request.y, 2),
                "positive": request.positive}
    return out


def _tail(node: LocalNode, name: str, lines: int = 15) -> str:
    return "\n".join(node.log_text(name).splitlines()[-lines:])


def run_demo(frames: int, out: Path, overrides: dict[str, Any] | None = None, transport: str = "ipc",
             timeout_s: float = 60.0, config: Path | None = None, clicks: Path | None = None,
             record: Path | None = None) -> dict[str, Any]:
    """Run the demo and return (and write to ``out/summary.json``) its summary.

    ``overrides`` are nested settings (``cli.overrides_from``), applied over the TOML ``config`` file;
    ``clicks`` is the click script (default config/demo-clicks.toml); ``record`` also runs
    ``samsa-stream record --out RECORD`` as a process of the node, for the whole session."""
    script = demo_script(clicks)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    ingest = {"frames": frames, **overrides.get("ingest", {})}
    overrides["ingest"] = {"fps": 10.0, **ingest}
    overrides["view"] = {"headless": True, "out": str(out / "view"), **overrides.get("view", {})}
    started = time.monotonic()
    with LocalNode(overrides, transport=transport, log_dir=out, config=config) as node:
        settings = node.settings
        stream = settings.ingest.stream_id
        phantom = PhantomCamera(settings.ingest.phantom)
        names = ["publisher", "worker", "view"] + (["record"] if record is not None else [])
        for name in names[:3]:
            node.start(name)
        console = PromptConsole(settings, stream)
        watch = Subscriber(settings, [stream], kinds=("mask",))
        try:
            if not wait_until(console.answers, timeout=20.0, interval=0.2):
                raise DemoError(f"worker did not come up:\n{_tail(node, 'worker')}")
            if record is not None:
                _start_recorder(node, record)
            node.start("ingest")
            summary = _follow(node, console, watch, phantom, script, frames, started + timeout_s, names)
        finally:
            console.close()
            watch.close()
        # The recorder stops first, once the pipeline has drained, so it keeps every result.
        order = (["record"] if record is not None else []) + ["ingest", "worker", "publisher", "view"]
        exit_codes = {name: node.stop(name) for name in order if name in node.procs}
        stats = {name: node.stats(name) for name in ("ingest", "worker", "publisher", "view")}
    for name, code in exit_codes.items():
        if code != 0:
            raise DemoError(f"{name} exited with code {code}; see {out / (name + '.log')}")
    summary.update(_figures(stats, exit_codes, settings.worker.engine, out))
    if record is not None:
        summary["recording"] = str(record)
    summary["wall_time_s"] = round(time.monotonic() - started, 2)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _start_recorder(node: LocalNode, record: Path) -> None:
    """``samsa-stream record --out RECORD``, up (its file open) before the camera starts."""
    record.parent.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    node.start("record", "--out", str(record))
    if not wait_until(lambda: record.exists() or not node.running("record"), timeout=20.0, interval=0.05) \
            or not node.running("record"):
        raise DemoError(f"the recorder did not start:\n{_tail(node, 'record')}")


def _follow(node: LocalNode, console: PromptConsole, watch: Subscriber, phantom: PhantomCamera, script: ClickScript,
            frames: int, deadline: float, names: list[str]) -> dict[str, Any]:
    """Send the scripted prompts as frames arrive and score every mask against the ground truth."""
    steps = script.ordered(frames)
    done = 0
    clicks: list[dict[str, Any]] = []
    scores: dict[int, list[float]] = {}
    first_frame: int | None = None
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        update = watch.receive(100)
        if update is None or update.masks is None:
            if not node.running("ingest"):  # camera done: wait for the pipeline to drain
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.0:
                    break
            for name in names:
                if not node.running(name):
                    raise DemoError(f"{name} stopped unexpectedly:\n{_tail(node, name)}")
            continue
        quiet_since = None
        msg = update.masks
        first_frame = msg.frame_id if first_frame is None else first_frame
        truth = phantom.labels(msg.frame_id)
        for obj in msg.objects:
            scores.setdefault(obj.object_id, []).append(iou(obj.mask, truth == obj.object_id))
        while done < len(steps) and msg.frame_id - first_frame >= steps[done].frame_in(frames):
            clicks.append(_send(console, phantom, steps[done], msg.frame_id))
            done += 1
    iou_summary = {str(k): {"mean": round(float(np.mean(v)), 4), "min": round(float(np.min(v)), 4), "frames": len(v)}
                   for k, v in sorted(scores.items())}
    return {"clicks": clicks, "iou_vs_phantom": iou_summary}


def _figures(stats: dict[str, dict[str, Any]], exit_codes: dict[str, int], engine_setting: str,
             out: Path) -> dict[str, Any]:
    counters = {name: s.get("counters", {}) for name, s in stats.items()}
    captured = int(counters["ingest"].get("frames_captured", 0))
    processed = int(counters["worker"].get("frames_processed", 0))
    published = stats["publisher"].get("latency_ms", {}).get("capture_to_published", {})
    displayed = stats["view"].get("latency_ms", {}).get("capture_to_display", {})
    return {
        "frames_captured": captured,
        "frames_processed": processed,
        "frames_dropped": captured - processed,
        "masks_published": int(counters["publisher"].get("masks_published", 0)),
        "engine": stats["worker"].get("engine", engine_setting),
        "latency_ms": {k: published[k] for k in ("p50", "p95", "max") if k in published},
        "latency_to_display_ms": {k: displayed[k] for k in ("p50", "p95", "max") if k in displayed},
        "overlay_pngs": len(list((out / "view").glob("overlay_*.png"))),
        "counters": counters,
        "exit_codes": exit_codes,
    }
