"""The OpenIGTLink bridge: one stream's masks as label maps for navigation displays (3D Slicer).

Subscribes to ``stream/``, ``mask/`` (and, with ``igtl.send_overlay``, ``overlay/``) of
``igtl.stream_id`` through the project's Subscriber and serves every connected OpenIGTLink client:

- IMAGE ``igtl.label_device``: the uint8 label map of each new mask message (convert.py: values,
  overlaps, geometry, timestamp);
- IMAGE ``igtl.overlay_device`` (``send_overlay`` only): the publisher's RGB overlay;
- STRING ``SamsaStatus``: ``live: ...``, ``stale: ...`` or ``waiting: ...`` when that changes, and
  to each client as it connects.

Stale: while the stream is stale by ``Subscriber.stale`` (the publisher says so, or no new mask for
``display.stale_after_s`` by this process's clock) no label map goes out, so a navigation display
keeps no old mask passing for a live one without being told: the ``stale`` status says why. The
next live mask is sent after a ``live`` status. Overlays go out while stale only when the publisher
drew the stale marker in them.

Only the newest mask of each batch read from the broadcast socket is converted (older ones are
counted ``masks_superseded``); with no client connected nothing is converted (``label_maps_no_client``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .. import supervision
from ..display.subscriber import Subscriber, Update
from ..errors import CommandError, ProtocolError
from ..protocol import now_ns
from ..runtime import ProcessStats
from ..settings import Settings
from ..transport import PollLoop, SocketFactory
from .convert import ijk_to_ras, image_message, label_message, status_message
from .server import IgtlClient, IgtlServer

log = logging.getLogger(__name__)

STATUS_DEVICE = "SamsaStatus"  # OpenIGTLink device of the STRING status messages


class Bridge:
    """Turns the subscriber's updates into messages on ``server``; ``on_broadcast`` when the subscriber's
    socket is readable, ``on_connect`` when the server's listener is, ``tick`` after every loop pass."""

    def __init__(self, settings: Settings, subscriber: Subscriber, server: IgtlServer, stats: ProcessStats) -> None:
        self.cfg = settings.igtl
        self.stream = self.cfg.stream_id
        self.subscriber, self.server, self.stats = subscriber, server, stats
        try:
            self.matrix = ijk_to_ras(self.cfg.spacing_mm, self.cfg.origin_mm)
        except ProtocolError as exc:
            raise CommandError(f"igtl.spacing_mm / igtl.origin_mm: {exc}") from None
        self.state = "waiting"
        self.status = f"waiting: no mask of stream {self.stream} yet"

    def on_broadcast(self) -> None:
        updates = self.subscriber.drain()
        masks = [u for u in updates if u.kind == "mask"]
        overlays = [u for u in updates if u.kind == "overlay"]
        if len(masks) > 1:
            self.stats.count("masks_superseded", len(masks) - 1)
        self.judge()
        if masks:
            self.send_label_map(masks[-1])
        if overlays:
            self.send_overlay(overlays[-1])

    def on_connect(self) -> None:
        new = self.server.accept()
        if new:
            self._send_status(new)
        self.stats.info["clients"] = self.server.clients

    def tick(self) -> None:
        self.server.reap()
        self.stats.info["clients"] = self.server.clients
        self.judge()

    def judge(self) -> None:
        """Go stale (and say so) once the subscriber judges the stream's newest mask not live."""
        if self.state != "stale" and self.subscriber.stale(self.stream):
            latest = self.subscriber.latest(self.stream)
            frame = f" (newest frame {latest.frame_id})" if latest is not None else ""
            self._set_state("stale", f"stale: stream {self.stream} has no live mask{frame}; "
                                     "label maps paused until masks resume")
            self.stats.count("stale_periods")

    def send_label_map(self, update: Update) -> None:
        masks = update.masks
        if masks is None:
            return
        if self.subscriber.stale(self.stream):
            self.stats.count("label_maps_skipped_stale")
            return
        if self.state != "live":
            self._set_state("live", f"live: stream {self.stream}")
        if not self.server.clients:
            self.stats.count("label_maps_no_client")
            return
        try:
            message = label_message(masks.objects, masks.size, masks.capture_ns, self.cfg.label_device, self.matrix)
        except ProtocolError as exc:
            self.stats.error("messages_rejected", f"masks of {self.stream} frame {masks.frame_id}: {exc}")
            return
        self.server.send(("IMAGE", self.cfg.label_device), message.pack())
        self.stats.count("label_maps_sent")
        self.stats.observe("capture_to_igtl", (now_ns() - masks.capture_ns) / 1e6)

    def send_overlay(self, update: Update) -> None:
        if update.image is None or update.overlay is None or not self.server.clients:
            return
        if self.state == "stale" and not update.overlay.stale:
            self.stats.count("overlays_skipped_stale")
            return
        try:
            message = image_message(update.image, self.cfg.overlay_device, update.overlay.capture_ns, self.matrix)
        except ProtocolError as exc:
            self.stats.error("messages_rejected", f"overlay of {self.stream} frame {update.frame_id}: {exc}")
            return
        self.server.send(("IMAGE", self.cfg.overlay_device), message.pack())
        self.stats.count("overlays_sent")

    def _set_state(self, state: str, text: str) -> None:
        self.state, self.status = state, text
        (log.warning if state == "stale" else log.info)("%s", text)
        self._send_status(None)

    def _send_status(self, to: list[IgtlClient] | None) -> None:
        self.server.send(("STRING", STATUS_DEVICE), status_message(self.status, STATUS_DEVICE, now_ns()).pack(), to)


def run_igtl(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    cfg = settings.igtl
    stats = ProcessStats("igtl", settings.log.stats_interval_s)
    # "stream" first: a bridge that joins a stale stream learns it before the replayed mask arrives.
    kinds = ("stream", "mask", "overlay") if cfg.send_overlay else ("stream", "mask")
    with SocketFactory(settings) as sockets, IgtlServer(cfg.port, cfg.local_only, stats) as server:
        subscriber = Subscriber(settings, [cfg.stream_id], kinds=kinds, sockets=sockets, stats=stats)
        bridge = Bridge(settings, subscriber, server, stats)
        log.info("OpenIGTLink bridge of stream %s on %s:%d: label maps as %r%s", cfg.stream_id, server.host,
                 server.port, cfg.label_device, f", overlays as {cfg.overlay_device!r}" if cfg.send_overlay else "")
        loop = PollLoop(stop, settings.sockets.poll_ms, stats)
        loop.add(subscriber.socket, bridge.on_broadcast)
        loop.add(server.listener, bridge.on_connect)
        supervision.current().ready(f"subscribed to stream {cfg.stream_id}; listening on {server.host}:{server.port}")
        try:
            loop.run(tick=bridge.tick)
        finally:
            subscriber.close()
    stats.write(stats_file)
    log.info("igtl stopped: %s", dict(stats.counters))
    return stats


__all__ = ["STATUS_DEVICE", "Bridge", "run_igtl"]
