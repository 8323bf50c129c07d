"""The reference display: subscribes to one stream's masks and overlays.

With a screen it shows the overlay in a window; left click = positive click, right click =
negative click on the current object, ``n`` starts a new object, ``u`` undoes, ``r`` resets,
``q`` quits. Headless, it writes overlay PNGs and a JSON-lines log of every mask message.

When the stream goes stale (``Subscriber.stale``: the publisher says so, or no mask for
``display.stale_after_s``), the window shows the last overlay with the stale marker, and the
headless output writes one marked PNG (``overlay_<frame>_stale.png``) and a ``{"stale": ...}`` line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, TextIO

import cv2

from .. import supervision
from ..errors import CommandError
from ..protocol import MaskBroadcast, now_ns
from ..publisher.overlay import draw_stale_marker
from ..runtime import ProcessStats
from ..settings import Settings, ViewSettings
from ..transport import PollLoop, SocketFactory
from .console import PromptConsole, PromptTimeout
from .subscriber import Subscriber, Update

log = logging.getLogger(__name__)
WINDOW = "samsa-stream"


def mask_log_line(msg: MaskBroadcast, received_ns: int) -> dict[str, Any]:
    """One line of ``masks.jsonl``: what a mask message said and when it arrived."""
    return {"stream": msg.stream_id, "frame_id": msg.frame_id, "seq": msg.seq, "publisher": msg.publisher,
            "capture_ns": msg.capture_ns, "received_ns": received_ns, "hops": msg.hops, "engine": msg.engine,
            "notices": msg.notices, "objects": [o.meta() for o in msg.objects]}


class _Recorder:
    """Headless output: every mask message as a line of ``masks.jsonl``, overlays as PNGs (up to ``max_pngs``)."""

    def __init__(self, cfg: ViewSettings, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.stream_id = cfg.stream_id
        self.marked: tuple[int, str] | None = None  # the (seq, publisher) of the mask last marked stale
        self.out = cfg.out
        self.max_pngs = cfg.max_pngs
        self.pngs = 0
        self.log_file: TextIO | None = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = (self.out / "masks.jsonl").open("a", buffering=1)

    def write(self, update: Update) -> None:
        if self.out is None:
            return
        if update.masks is not None and self.log_file is not None:
            self.log_file.write(json.dumps(mask_log_line(update.masks, update.received_ns)) + "\n")
        elif update.image is not None and update.overlay is not None and not update.overlay.stale:
            self._png(f"overlay_{update.frame_id:06d}.png", update.image)

    def check_stale(self) -> None:
        """Once per stale spell: a marked copy of the last overlay and a log line."""
        if self.out is None or not self.subscriber.stale(self.stream_id):
            return
        masks = self.subscriber.latest(self.stream_id, "mask")
        overlay = self.subscriber.latest(self.stream_id, "overlay")
        if masks is None or self.marked == (masks.seq, masks.publisher):
            return
        self.marked = (masks.seq, masks.publisher)
        age = self.subscriber.mask_age_s(self.stream_id)
        if self.log_file is not None:
            self.log_file.write(json.dumps({"stream": self.stream_id, "stale": True, "frame_id": masks.frame_id,
                                            "age_s": round(age or 0.0, 3), "received_ns": now_ns()}) + "\n")
        if overlay is not None and overlay.image is not None:
            image = overlay.image.copy()
            draw_stale_marker(image, age or 0.0)
            self._png(f"overlay_{overlay.frame_id:06d}_stale.png", image)

    def _png(self, name: str, image: Any) -> None:
        if self.out is None or self.pngs >= self.max_pngs:
            return
        cv2.imwrite(str(self.out / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.pngs += 1

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()


def run_view(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    cfg = settings.view
    if not cfg.headless and not _has_screen():
        raise CommandError("no screen available for the view window: run with --headless --out DIR")
    stats = ProcessStats("view", settings.log.stats_interval_s)
    with SocketFactory(settings) as sockets:
        subscriber = Subscriber(settings, [cfg.stream_id], kinds=("mask", "overlay", "stream"), sockets=sockets,
                                stats=stats)
        window = None if cfg.headless else _Window(PromptConsole(settings, cfg.stream_id, sockets), subscriber)
        recorder = _Recorder(cfg, subscriber)

        def received() -> None:
            for update in subscriber.drain():
                recorder.write(update)

        def tick() -> bool:
            recorder.check_stale()
            return window.pump() if window is not None else False

        # A window must be redrawn and its keys read often; headless, the loop only waits for messages.
        loop = PollLoop(stop, settings.sockets.poll_ms if window is None else 15, stats)
        loop.add(subscriber.socket, received)
        supervision.current().ready(f"subscribed to stream {cfg.stream_id}")
        try:
            loop.run(tick=tick)
        finally:
            recorder.close()
            if window is not None:
                window.close()
    stats.write(stats_file)
    log.info("view stopped: %s", dict(stats.counters))
    return stats


def _has_screen() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class _Window:
    """The on-screen window: shows the newest overlay, turns mouse clicks into prompts."""

    def __init__(self, console: PromptConsole, subscriber: Subscriber) -> None:
        self.console, self.subscriber = console, subscriber
        self.stream_id = console.stream_id
        self.object_id = 1
        self._shown: Update | None = None
        self._shown_stale = False
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
            shown = self._shown.frame_id if self._shown is not None else None
            self._send("click", object_id=self.object_id, x=float(x), y=float(y),
                       positive=event == cv2.EVENT_LBUTTONDOWN, frame_id=shown)

    def pump(self) -> bool:
        """Redraw if a new overlay came and handle keys; True when the user quits."""
        overlay = self.subscriber.latest(self.stream_id, "overlay")
        stale = self.subscriber.stale(self.stream_id)
        if overlay is not None and overlay.image is not None and (overlay is not self._shown
                                                                   or stale != self._shown_stale):
            image = overlay.image
            if stale and not (overlay.overlay is not None and overlay.overlay.stale):
                image = image.copy()
                draw_stale_marker(image, self.subscriber.mask_age_s(self.stream_id) or 0.0)
            cv2.imshow(WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            self._shown, self._shown_stale = overlay, stale
        key = cv2.waitKey(1) & 0xFF
        if key == ord("q"):
            return True
        if key == ord("n"):
            masks = self.subscriber.latest(self.stream_id, "mask")
            known = [o.object_id for o in masks.masks.objects] if masks is not None and masks.masks else []
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
        self.console.close()
