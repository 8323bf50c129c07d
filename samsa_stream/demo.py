"""The one-command demo: the whole node on this machine, the phantom camera, scripted clicks.

Starts publisher, worker, a headless view and ingest as separate processes, clicks on the
phantom's objects (a positive click, a negative click, a second object), follows the masks
against the phantom's ground truth, stops everything and writes ``summary.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .display.console import PromptConsole
from .display.subscriber import Subscriber
from .errors import SamsaError
from .evaluation.metrics import iou
from .ingest.sources.phantom import PhantomCamera
from .node import LocalNode, wait_until
from .runtime import write_json_atomic

log = logging.getLogger(__name__)


class DemoError(SamsaError, RuntimeError):
    """A demo process failed; the message carries the end of its log."""


def background_point(labels: np.ndarray) -> tuple[float, float]:
    """(x, y) of the background pixel farthest from every object: a safe negative click."""
    distance = cv2.distanceTransform((labels == 0).astype(np.uint8), cv2.DIST_L2, 5)
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(col), float(row)


@dataclass
class ClickScript:
    """Which click to send once the displays show frame ``at`` (relative to the first frame seen)."""

    steps: list[tuple[int, str]] = field(default_factory=list)  # (frames after start, action)
    done: int = 0

    @classmethod
    def default(cls, frames: int) -> ClickScript:
        gap = max(1, frames // 5)
        return cls([(0, "object 1 positive"), (gap, "object 1 negative"), (2 * gap, "object 2 positive")])


def _send_click(console: PromptConsole, phantom: PhantomCamera, action: str, frame_id: int) -> dict[str, Any]:
    labels = phantom.labels(frame_id)
    if action == "object 1 negative":
        x, y = background_point(labels)
        object_id, positive = 1, False
    else:
        object_id, positive = (1, True) if action == "object 1 positive" else (2, True)
        x, y = phantom.centre(object_id - 1, frame_id)
    reply = console.click(object_id, x, y, positive=positive, frame_id=frame_id)
    log.info("click %s at (%.1f, %.1f) on frame %d: %s", action, x, y, frame_id, "ok" if reply.ok else reply.error)
    return {"action": action, "object_id": object_id, "x": round(x, 2), "y": round(y, 2), "positive": positive,
            "frame_id": frame_id, "ok": reply.ok, "error": reply.error}


def _tail(node: LocalNode, name: str, lines: int = 15) -> str:
    return "\n".join(node.log_text(name).splitlines()[-lines:])


def run_demo(frames: int, out: Path, overrides: dict[str, Any] | None = None, transport: str = "ipc",
             timeout_s: float = 60.0, config: Path | None = None) -> dict[str, Any]:
    """Run the demo and return (and write to ``out/summary.json``) its summary.

    ``overrides`` are nested settings (``cli.overrides_from``), applied over the TOML ``config`` file."""
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
        for name in ("publisher", "worker", "view"):
            node.start(name)
        console = PromptConsole(settings, stream)
        watch = Subscriber(settings, [stream], kinds=("mask",))
        try:
            if not wait_until(console.answers, timeout=20.0, interval=0.2):
                raise DemoError(f"worker did not come up:\n{_tail(node, 'worker')}")
            node.start("ingest")
            summary = _follow(node, console, watch, phantom, frames, started + timeout_s)
        finally:
            console.close()
            watch.close()
        exit_codes = {name: node.stop(name) for name in ("ingest", "worker", "publisher", "view")}
        stats = {name: node.stats(name) for name in ("ingest", "worker", "publisher", "view")}
    for name, code in exit_codes.items():
        if code != 0:
            raise DemoError(f"{name} exited with code {code}; see {out / (name + '.log')}")
    summary.update(_figures(stats, exit_codes, settings.worker.engine, out))
    summary["wall_time_s"] = round(time.monotonic() - started, 2)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _follow(node: LocalNode, console: PromptConsole, watch: Subscriber, phantom: PhantomCamera, frames: int,
            deadline: float) -> dict[str, Any]:
    """Send the scripted clicks as frames arrive and score every mask against the ground truth."""
    script = ClickScript.default(frames)
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
            for name in ("worker", "publisher", "view"):
                if not node.running(name):
                    raise DemoError(f"{name} stopped unexpectedly:\n{_tail(node, name)}")
            continue
        quiet_since = None
        msg = update.masks
        first_frame = msg.frame_id if first_frame is None else first_frame
        truth = phantom.labels(msg.frame_id)
        for obj in msg.objects:
            scores.setdefault(obj.object_id, []).append(iou(obj.mask, truth == obj.object_id))
        while script.done < len(script.steps) and msg.frame_id - first_frame >= script.steps[script.done][0]:
            clicks.append(_send_click(console, phantom, script.steps[script.done][1], msg.frame_id))
            script.done += 1
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
