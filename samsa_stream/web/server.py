"""The browser display's HTTP and WebSocket server (aiohttp): the page, its frames, its prompts.

Routes: ``/`` the page, ``/static/...`` its script and style (shipped in the package), ``/ws`` the
WebSocket (frames out, prompts in; docs/web.md), ``/api/status`` the server's counters as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .. import supervision
from ..errors import CommandError, ProtocolError
from ..protocol import check_stream_id
from ..runtime import ProcessStats
from ..settings import Settings
from .access import Access, origin_refusal
from .feed import BroadcastFeed, Client, Hub
from .frames import Frame
from .prompts import PageMessageError, PromptRelay, prompt_fields

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
TICK_S = 0.5  # a page that hears nothing for a few ticks knows the server (or the link) is gone
MAX_PAGE_MESSAGE = 16 * 1024  # bytes: a prompt is a few dozen
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the page URL may hold the token
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'self'"),
}


def _token(request: web.Request) -> str | None:
    """The token a request carries: ``?token=`` or ``Authorization: Bearer ...``."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


def _refuse(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=403, headers=_HEADERS)


class WebServer:
    """One server: the broadcast feed thread, the hub of connected pages and the prompt relay."""

    def __init__(self, settings: Settings, stats: ProcessStats | None = None) -> None:
        self.settings = settings
        self.cfg = settings.web
        self.access = Access(self.cfg)
        self.default_stream = check_stream_id(self.cfg.stream_id)
        self.stats = stats or ProcessStats("web", settings.log.stats_interval_s)
        self.hub = Hub()
        self.relay = PromptRelay(settings)
        self.feed: BroadcastFeed | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = web.Application(client_max_size=MAX_PAGE_MESSAGE)
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/ws", self.websocket)
        self.app.router.add_get("/api/status", self.status)
        self.app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Subscribe to the broadcast and listen (``port`` 0: any free port); returns the port."""
        loop = asyncio.get_running_loop()

        def deliver(frame: Frame) -> None:
            try:
                loop.call_soon_threadsafe(self.hub.publish, frame)
            except RuntimeError:  # the loop closed while the feed was stopping
                pass

        self.feed = BroadcastFeed(self.settings, self.stats, deliver)
        self.feed.start()
        self.runner = web.AppRunner(self.app, access_log=None)  # an access log would keep ?token= in it
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or self.cfg.host, self.cfg.port if port is None else port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise CommandError(f"web: cannot listen on {host or self.cfg.host}:{port or self.cfg.port}: "
                               f"{exc.strerror or exc}") from None
        self.port = int(self.runner.addresses[0][1])
        self.stats.info["listening"] = f"{host or self.cfg.host}:{self.port}"
        return self.port

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.feed is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.feed.stop)
            self.feed = None
        self.relay.close()

    def snapshot(self) -> dict[str, Any]:
        """The stats with every connected page and every stream seen (``/api/status``, the stats file)."""
        self.stats.info["clients"] = [c.summary() for c in sorted(self.hub.clients, key=lambda c: c.id)]
        self.stats.info["streams"] = self.hub.streams()
        return self.stats.snapshot()

    # --- HTTP ---

    async def page(self, request: web.Request) -> web.StreamResponse:
        refusal = self.access.view_refusal(_token(request))
        if refusal is not None:
            self.stats.count("views_refused")
            return web.Response(status=403, text=f"403 Forbidden: {refusal}\n", headers=_HEADERS)
        return web.FileResponse(STATIC / "index.html", headers=_HEADERS)

    async def status(self, request: web.Request) -> web.Response:
        refusal = self.access.view_refusal(_token(request))
        if refusal is not None:
            self.stats.count("views_refused")
            return _refuse(refusal)
        return web.json_response(self.snapshot(), headers=_HEADERS,
                                 dumps=lambda d: json.dumps(d, default=str))

    # --- WebSocket ---

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        token = _token(request)
        refusal = self.access.view_refusal(token) or origin_refusal(request.headers.get("Origin"), request.host)
        if refusal is not None:
            self.stats.count("views_refused")
            return _refuse(refusal)
        try:
            stream = check_stream_id(request.query.get("stream") or self.default_stream)
        except ProtocolError as exc:
            self.stats.count("views_refused")
            return web.json_response({"error": str(exc)}, status=400, headers=_HEADERS)
        ws = web.WebSocketResponse(max_msg_size=MAX_PAGE_MESSAGE, heartbeat=None)
        await ws.prepare(request)
        client = Client(request.remote or "?", stream, self.access.prompt_refusal(request.remote, token))
        send_lock = asyncio.Lock()  # frames, ticks and replies go out whole, one after another
        self.hub.add(client)
        self.stats.count("clients_connected")
        log.info("page %d connected from %s (stream %s, prompts %s)", client.id, client.remote, stream,
                 "allowed" if client.prompt_refusal is None else "refused")
        sender = asyncio.create_task(self._send_frames(ws, client, send_lock))
        try:
            await self._send_json(ws, send_lock, self._hello(client))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(ws, client, send_lock, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._reject(ws, client, send_lock, "binary messages are not understood; send JSON text")
                elif msg.type == WSMsgType.ERROR:
                    self.stats.error("websocket_errors", f"page {client.id}: {ws.exception()}")
        finally:
            sender.cancel()
            self.hub.remove(client)
            self.stats.count("clients_disconnected")
            log.info("page %d gone: %s", client.id, client.summary())
        return ws

    def _hello(self, client: Client) -> dict[str, Any]:
        return {"type": "hello", "stream": client.stream_id, "streams": self.hub.streams(),
                "may_prompt": client.prompt_refusal is None, "prompt_refusal": client.prompt_refusal,
                "stale_after_s": self.settings.display.stale_after_s, "max_fps": self.cfg.max_fps,
                "tick_s": TICK_S, "client": client.id}

    async def _send_json(self, ws: web.WebSocketResponse, lock: asyncio.Lock, data: dict[str, Any]) -> None:
        async with lock:
            if not ws.closed:
                await ws.send_str(json.dumps(data, default=str))

    async def _send_frames(self, ws: web.WebSocketResponse, client: Client, lock: asyncio.Lock) -> None:
        """The newest frame of the client's stream, at most web.max_fps a second; a tick when idle."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.cfg.max_fps
        last_sent = -interval
        counted = 0  # of client.slot.skipped, already in the stats
        try:
            while not ws.closed:
                try:
                    await asyncio.wait_for(client.wake.wait(), TICK_S)
                except TimeoutError:
                    await self._send_json(ws, lock, {"type": "tick", "streams": self.hub.streams()})
                    continue
                client.wake.clear()
                wait = last_sent + interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the rate limit: newer frames replace this one meanwhile
                frame = client.slot.take()
                if client.slot.skipped > counted:  # replaced in the slot before they could go out
                    self.stats.count("frames_skipped", client.slot.skipped - counted)
                    counted = client.slot.skipped
                if frame is None:
                    continue
                last_sent = loop.time()
                self.stats.count("frames_sent")
                self.stats.count("bytes_sent", len(frame.data))
                async with lock:
                    if ws.closed:
                        return
                    await ws.send_bytes(frame.data)
        except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
            log.debug("page %d: send ended: %s", client.id, exc)

    async def _reject(self, ws: web.WebSocketResponse, client: Client, lock: asyncio.Lock, reason: str,
                      request_id: object = None) -> None:
        client.rejected += 1
        self.stats.error("page_messages_rejected", f"page {client.id} ({client.remote}): {reason}")
        await self._send_json(ws, lock, {"type": "error", "id": request_id, "error": reason})

    async def _on_message(self, ws: web.WebSocketResponse, client: Client, lock: asyncio.Lock, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            await self._reject(ws, client, lock, "message is not JSON")
            return
        if not isinstance(msg, dict):
            await self._reject(ws, client, lock, "message must be a JSON object with a 'type'")
            return
        kind, request_id = msg.get("type"), msg.get("id")
        if request_id is not None and type(request_id) is not int:
            await self._reject(ws, client, lock, f"id must be an integer, got {request_id!r:.40}")
            return
        if kind == "select":
            try:
                stream = check_stream_id(msg.get("stream") if isinstance(msg.get("stream"), str) else "")
            except ProtocolError as exc:
                await self._reject(ws, client, lock, str(exc), request_id)
                return
            self.hub.select(client, stream)
            await self._send_json(ws, lock, {"type": "selected", "id": request_id, "stream": stream})
        elif kind == "prompt":
            await self._prompt(ws, client, lock, msg, request_id)
        else:
            await self._reject(ws, client, lock, f"type must be 'select' or 'prompt', got {kind!r:.40}", request_id)

    async def _prompt(self, ws: web.WebSocketResponse, client: Client, lock: asyncio.Lock, msg: dict[str, Any],
                      request_id: object) -> None:
        try:
            op, fields = prompt_fields(msg)
        except PageMessageError as exc:
            await self._reject(ws, client, lock, str(exc), request_id)
            return
        if client.prompt_refusal is not None:
            client.refused += 1
            self.stats.count("prompts_refused")
            await self._send_json(ws, lock, {"type": "reply", "id": request_id, "op": op, "ok": False,
                                             "refused": True, "error": client.prompt_refusal})
            return
        client.prompts += 1
        self.stats.count("prompts_forwarded")
        reply = await self.relay.send(client.stream_id, op, fields)
        if not reply.ok:
            self.stats.count("prompts_failed")
        await self._send_json(ws, lock, {"type": "reply", "id": request_id, "op": op, "ok": reply.ok,
                                         "error": reply.error, "warnings": reply.warnings,
                                         "objects": reply.state.get("objects")})


async def serve(settings: Settings, stop: threading.Event, stats: ProcessStats, stats_file: Path | None) -> None:
    """Run a WebServer until ``stop`` is set; the stats file is written every log interval and at the end."""
    server = WebServer(settings, stats)
    port = await server.start()
    log.info("web display at http://%s:%d/ (stream %s; prompts %s)", settings.web.host, port,
             settings.web.stream_id, "need the token or an allowed address")
    supervision.current().ready(f"listening on {settings.web.host}:{port}")
    alive = asyncio.create_task(supervision.keep_alive(stats))  # pings from this event loop: a blocked loop stops them
    loop = asyncio.get_running_loop()
    try:
        while not await loop.run_in_executor(None, stop.wait, settings.log.stats_interval_s):
            server.snapshot()
            stats.write(stats_file)
    finally:
        alive.cancel()
        supervision.current().stopping()
        server.snapshot()
        await server.close()


def serving(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a web display answers at ``url`` (its ``/api/status``, open to viewers)."""
    try:
        with urllib.request.urlopen(url + "/api/status", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def run_web(settings: Settings, stop: threading.Event, stats_file: Path | None = None) -> ProcessStats:
    stats = ProcessStats("web", settings.log.stats_interval_s)
    asyncio.run(serve(settings, stop, stats, stats_file))
    stats.write(stats_file)
    log.info("web stopped: %s", dict(stats.counters))
    return stats


__all__ = ["WebServer", "run_web", "serve"]
