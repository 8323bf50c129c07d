"""The reference display: subscribes to one stream's masks and overlays.

With a screen it shows the overlay in a window; left click = positive click, right click =
negative click on the current object, ``n`` starts a new object, ``u`` undoes, ``r`` resets,
``q`` quits. Headless, it writes overlay PNGs and a JSON-lines log of every mask message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import zmq

from ..protocol import MaskBroadcast, OverlayImage, ProtocolError, now_ns, topic
from ..protocol import decode_image
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import SocketFactory
from .console import PromptConsole, PromptTimeout

log = logging.getLogger(__name__)
WINDOW = "samsa-stream"


class Display:
    """Keeps the latest mask and overlay of one stream; counts missed and repeated messages."""

    def __init__(self, stream_id: str, stats: ProcessStats) -> None:
        self.stream_id = stream_id
        self.stats = stats
        self.last_seq = {"masks": 0, "overlay": 0}
        self.masks: MaskBroadcast | None = None
        self.overlay: np.ndarray | None = None
        self.overlay_frame_id: int | None = None

    def receive(self, parts: list[Any]) -> str | None:
        """Handle one message (topic first); returns its type if it was new, else None."""
        kind = bytes(parts[0]).split(b"/", 1)[0].decode(errors="replace")
        try:
            if kind == "mask":
                msg: MaskBroadcast | OverlayImage = MaskBroadcast.from_parts(parts[1:])
                key = "masks"
            elif kind == "overlay":
                msg = OverlayImage.from_parts(parts[1:])
                key = "overlay"
            else:
                self.stats.error("messages_rejected", f"unexpected topic {bytes(parts[0])!r}")
                return None
        except ProtocolError as exc:
            self.stats.error("messages_rejected", str(exc))
            return None
        if msg.seq <= self.last_seq[key]:
            self.stats.count("messages_repeated")  # a cache replay meant for a later subscriber
            return None
        if self.last_seq[key] and msg.seq > self.last_seq[key] + 1 and key == "masks":
            self.stats.count("masks_missed", msg.seq - self.last_seq[key] - 1)
        self.last_seq[key] = msg.seq
        if isinstance(msg, MaskBroadcast):
            self.masks = msg
            self.stats.count("masks_received")
            self.stats.observe("capture_to_display", (now_ns() - msg.capture_ns) / 1e6)
        else:
            try:
                self.overlay = decode_image(msg.data)
            except ValueError as exc:
                self.stats.error("messages_rejected", f"overlay of frame {msg.frame_id}: {exc}")
                return None
            self.overlay_frame_id = msg.frame_id
            self.stats.count("overlays_received")
        return key


def mask_log_line(msg: MaskBroadcast, received_ns: int) -> dict[str, Any]:
    return {"stream": msg.stream_id, "frame_id": msg.frame_id, "seq": msg.seq, "capture_ns": msg.capture_ns,
            "received_ns": received_ns, "hops": msg.hops, "engine": msg.engine, "notices": msg.notices,
            "objects": [o.meta() for o in msg.objects]}


def run_view(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    cfg = settings.view
    stats = ProcessStats("view", settings.log.stats_interval_s)
    display = Display(cfg.stream_id, stats)
    if not cfg.headless and not _has_screen():
        raise RuntimeError("no screen available for the view window: run with --headless --out DIR")
    out_dir = cfg.out
    log_file: TextIO | None = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_file = (out_dir / "masks.jsonl").open("a", buffering=1)
    with SocketFactory(settings) as sockets:
        sub = sockets.socket("broadcast_in", subscribe=topic("mask", cfg.stream_id))
        sub.setsockopt(zmq.SUBSCRIBE, topic("overlay", cfg.stream_id))
        console = None if cfg.headless else PromptConsole(settings, cfg.stream_id, sockets)
        window = _Window(console, display) if console is not None else None
        pngs = 0
        try:
            while not stop.is_set():
                if not sub.poll(settings.sockets.poll_ms if window is None else 15):
                    if window is not None and window.pump():
                        break
                    continue
                kind = display.receive(sub.recv_multipart())
                if kind == "masks" and log_file is not None and display.masks is not None:
                    log_file.write(json.dumps(mask_log_line(display.masks, now_ns())) + "\n")
                if kind == "overlay" and out_dir is not None and pngs < cfg.max_pngs and display.overlay is not None:
                    path = out_dir / f"overlay_{display.overlay_frame_id:06d}.png"
                    cv2.imwrite(str(path), cv2.cvtColor(display.overlay, cv2.COLOR_RGB2BGR))
                    pngs += 1
                if window is not None and window.pump():
                    break
                stats.maybe_log()
        finally:
            if log_file is not None:
                log_file.close()
            if window is not None:
                window.close()
    stats.write(stats_file)
    log.info("view stopped: %s", dict(stats.counters))
    return stats


def _has_screen() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _Window:
    """The on-screen window: shows the newest overlay, turns mouse clicks into prompts."""

    def __init__(self, console: PromptConsole, display: Display) -> None:
        self.console, self.display = console, display
        self.object_id = 1
        self._shown_frame: int | None = None
        # GUI_NORMAL: no toolbar and no context menu, whose right-click would swallow negative clicks.
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        cv2.setMouseCallback(WINDOW, self._on_mouse)

    def _send(self, op: str, **fields: Any) -> None:
        try:
            reply = self.console.request(op, **fields)
        except PromptTimeout as exc:
            log.error("%s", exc)
            return
        if not reply.ok:
            log.error("worker refused %s: %s", op, reply.error)
        else:
            log.info("%s ok: %d object(s)", op, len(reply.state.get("objects", [])))

    def _on_mouse(self, event: int, x: int, y: int, _flags: int, _param: Any) -> None:
        log.debug("mouse event %d at (%d, %d)", event, x, y)
        if event in (cv2.EVENT_LBUTTONDOWN, cv2.EVENT_RBUTTONDOWN):
            self._send("click", object_id=self.object_id, x=float(x), y=float(y),
                       positive=event == cv2.EVENT_LBUTTONDOWN, frame_id=self.display.overlay_frame_id)

    def pump(self) -> bool:
        """Redraw if a new overlay came and handle keys; True when the user quits."""
        if self.display.overlay is not None and self.display.overlay_frame_id != self._shown_frame:
            cv2.imshow(WINDOW, cv2.cvtColor(self.display.overlay, cv2.COLOR_RGB2BGR))
            self._shown_frame = self.display.overlay_frame_id
        key = cv2.waitKey(1) & 0xFF
        if key == ord("q"):
            return True
        if key == ord("n"):
            known = [o.object_id for o in self.display.masks.objects] if self.display.masks else []
            self.object_id = max([self.object_id, *known]) + 1
            log.info("next clicks go to object %d", self.object_id)
        elif key == ord("u"):
            self._send("undo")
        elif key == ord("r"):
            self._send("reset")
            self.object_id = 1
        return False

    def close(self) -> None:
        cv2.destroyWindow(WINDOW)
