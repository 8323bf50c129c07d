"""The browser display's server without a browser: frames from a real broadcast socket to a WebSocket,
access control, malformed page messages, and the newest-frame-only rule for a slow page."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from samsa_stream.errors import CommandError
from samsa_stream.protocol import ObjectMask, SegmentationResult, decode_image, rle_decode
from samsa_stream.publisher.process import Publisher
from samsa_stream.settings import Settings, load_settings
from samsa_stream.transport import SocketFactory
from samsa_stream.web.access import Access, origin_refusal
from samsa_stream.web.frames import Frame, LatestSlot, decode_frame, encode_frame
from samsa_stream.web.server import WebServer

TOKEN = "a-long-enough-test-token"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="samsa-web-", dir="/tmp") as folder:  # ipc paths stay short
        yield Path(folder)


def make_settings(sock_dir: Path, **web: Any) -> Settings:
    endpoints = {n: f"ipc://{sock_dir}/{n}" for n in ("frames", "prompts", "results", "broadcast")}
    return load_settings(overrides={"endpoints": endpoints, "web": web,
                                    "sockets": {"reply_timeout_ms": 300}, "log": {"level": "INFO"}})


def make_result(frame_id: int, stream: str = "cam0", shift: int = 0) -> SegmentationResult:
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 1] = 120
    first = np.zeros((24, 32), bool)
    first[4:12, 5 + shift:15 + shift] = True
    second = np.zeros((24, 32), bool)
    second[15:20, 20:30] = True
    objects = [ObjectMask(1, "vessel", (255, 0, 0), first, 0.9), ObjectMask(2, "tumour", (0, 0, 255), second, 0.7)]
    return SegmentationResult(stream, frame_id, 1_700_000_000_000_000_000 + frame_id, rgb, objects, "spectral",
                              notices=["test notice"])


class Broadcast:
    """The publisher's message handling on a real XPUB socket bound where the web server subscribes."""

    def __init__(self, settings: Settings) -> None:
        self.sockets = SocketFactory(settings)
        self.xpub = self.sockets.socket("broadcast_out")
        self.publisher = Publisher(settings)
        self.frame_id = 0

    def send(self, **result: Any) -> None:
        self.frame_id += 1
        for parts in self.publisher.publish(make_result(self.frame_id, **result)):
            self.xpub.send_multipart(parts)

    def close(self) -> None:
        self.sockets.close()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[WebServer, str]]:
    server = WebServer(settings)
    port = await server.start(port=0)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await server.close()


async def receive_until(ws: aiohttp.ClientWebSocketResponse, accept: Callable[[aiohttp.WSMessage], bool],
                        nudge: Callable[[], None] | None = None, timeout_s: float = 15.0) -> aiohttp.WSMessage:
    """The first message ``accept`` takes; ``nudge`` runs while nothing arrives (e.g. publish again, while
    the subscription is still on its way)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if nudge is not None:
            nudge()
        try:
            msg = await asyncio.wait_for(ws.receive(), 0.1)
        except TimeoutError:
            continue
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise AssertionError(f"websocket closed: {msg}")
        if accept(msg):
            return msg
    raise AssertionError(f"no accepted message within {timeout_s} s")


def is_frame(msg: aiohttp.WSMessage, objects: int = 1) -> bool:
    return msg.type == aiohttp.WSMsgType.BINARY and len(decode_frame(msg.data)[0]["objects"]) >= objects


def is_json(kind: str) -> Callable[[aiohttp.WSMessage], bool]:
    return lambda msg: msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") == kind


# --- pure parts ---


def test_a_frame_round_trips_with_its_image_and_run_lengths() -> None:
    rles = [np.array([3, 4, 5], np.uint32), np.array([12], np.uint32)]
    header = {"type": "frame", "stream": "cam0", "image": {"encoding": "jpeg"},
              "objects": [{"id": 1}, {"id": 2}]}
    data = encode_frame(header, b"\xff\xd8image", rles)
    decoded, image, runs = decode_frame(data)
    assert image == b"\xff\xd8image"
    assert [r.tolist() for r in runs] == [[3, 4, 5], [12]]
    assert decoded["objects"][0]["rle"] == [len(b"\xff\xd8image"), 3]
    with pytest.raises(ValueError, match="magic"):
        decode_frame(b"PNG\x00" + data[4:])
    with pytest.raises(ValueError, match="run-length arrays"):
        encode_frame({"objects": [{"id": 1}]}, None, [])


def frame(version: int, stream: str = "cam0") -> Frame:
    return Frame(stream, version, {"version": version}, b"")


def test_the_slot_keeps_only_the_newest_frame_and_counts_the_rest() -> None:
    slot = LatestSlot()
    for version in range(1, 11):
        slot.offer(frame(version))
    slot.offer(frame(4))  # older than what waits: ignored, not counted
    taken = slot.take()
    assert taken is not None and taken.version == 10
    assert (slot.skipped, slot.sent) == (9, 1)
    assert slot.take() is None
    slot.offer(frame(10))  # already sent
    assert slot.take() is None
    slot.reset()  # another stream: its versions start afresh
    slot.offer(frame(1, "cam1"))
    assert slot.take() is not None


def test_access_rules(sock_dir: Path) -> None:
    access = Access(make_settings(sock_dir, token=TOKEN, allow_prompts_from=["10.1.0.0/16", "::1/128"]).web)
    assert access.token_ok(TOKEN) and not access.token_ok(TOKEN[:-1]) and not access.token_ok(None)
    assert access.prompt_refusal("10.1.2.3", None) is None
    assert access.prompt_refusal("::ffff:10.1.2.3", None) is None  # an IPv4 client on a dual-stack socket
    assert access.prompt_refusal("::1", None) is None
    assert "need the access token" in (access.prompt_refusal("192.168.1.5", None) or "")
    assert access.prompt_refusal("192.168.1.5", TOKEN) is None
    assert "not this display's token" in (access.prompt_refusal("192.168.1.5", "wrong-token-of-16-chars") or "")
    assert access.view_refusal(None) is None  # viewing is open unless web.view_requires_token
    assert origin_refusal(None, "127.0.0.1:8080") is None
    assert origin_refusal("http://127.0.0.1:8080", "127.0.0.1:8080") is None
    assert "refused" in (origin_refusal("http://evil.example", "127.0.0.1:8080") or "")
    with pytest.raises(CommandError, match="allow_prompts_from"):
        Access(make_settings(sock_dir, allow_prompts_from=["not-a-network"]).web)
    with pytest.raises(CommandError, match="view_requires_token"):
        Access(make_settings(sock_dir, view_requires_token=True).web)


# --- the server ---


def test_a_page_gets_the_broadcast_as_frames_with_image_and_masks(sock_dir: Path) -> None:
    settings = make_settings(sock_dir)
    broadcast = Broadcast(settings)

    async def scenario() -> None:
        async with running(settings) as (server, url), aiohttp.ClientSession() as http:
            async with http.get(url + "/") as page:
                assert page.status == 200 and "app.js" in await page.text()
            async with http.get(url + "/static/app.js") as script:
                assert script.status == 200
            async with http.ws_connect(url + "/ws") as ws:
                hello = json.loads((await receive_until(ws, is_json("hello"))).data)
                assert hello["stream"] == "cam0" and hello["may_prompt"] is True  # loopback is allowed
                msg = await receive_until(ws, lambda m: is_frame(m, 2) and decode_frame(m.data)[1] is not None,
                                          nudge=broadcast.send)
                header, image, rles = decode_frame(msg.data)
                assert header["stream"] == "cam0" and header["size"] == [24, 32]
                assert header["capture_ms"] == pytest.approx((1_700_000_000_000_000_000 + header["frame_id"]) / 1e6)
                assert [(o["id"], o["label"], o["colour"], o["present"]) for o in header["objects"]] == [
                    (1, "vessel", [255, 0, 0], True), (2, "tumour", [0, 0, 255], True)]
                expected = make_result(header["frame_id"])
                for obj, counts in zip(expected.objects, rles, strict=True):
                    assert np.array_equal(rle_decode(counts, (24, 32)), obj.mask)
                assert image is not None and decode_image(np.frombuffer(image, np.uint8)).shape == (24, 32, 3)
                assert header["notices"] == ["test notice"] and header["engine"] == "spectral"
                assert header["stale"] is False and header["age_ms"] >= 0
                async with http.get(url + "/api/status") as status:
                    snapshot = await status.json()
                assert snapshot["counters"]["frames_sent"] >= 1
                assert [c["stream"] for c in snapshot["clients"]] == ["cam0"]
                assert [s["stream"] for s in snapshot["streams"]] == ["cam0"]

    try:
        asyncio.run(scenario())
    finally:
        broadcast.close()


def test_a_silent_stream_turns_stale_and_a_new_mask_makes_it_live_again(sock_dir: Path) -> None:
    settings = make_settings(sock_dir)
    settings.display.stale_after_s = 0.3
    broadcast = Broadcast(settings)

    async def scenario() -> None:
        async with running(settings) as (_, url), aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
            await receive_until(ws, is_frame, nudge=broadcast.send)
            stale = await receive_until(ws, lambda m: is_frame(m) and decode_frame(m.data)[0]["stale"])
            assert decode_frame(stale.data)[0]["age_ms"] >= 300
            await receive_until(ws, lambda m: is_frame(m) and not decode_frame(m.data)[0]["stale"],
                                nudge=broadcast.send)

    try:
        asyncio.run(scenario())
    finally:
        broadcast.close()


def test_prompts_need_the_token_from_outside_the_allowed_networks(sock_dir: Path) -> None:
    settings = make_settings(sock_dir, token=TOKEN, allow_prompts_from=["192.0.2.0/24"])
    click = {"type": "prompt", "id": 7, "op": "click", "object_id": 1, "x": 3.0, "y": 4.0, "positive": True}

    async def scenario() -> None:
        async with running(settings) as (server, url), aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "/ws") as ws:  # viewing is open
                hello = json.loads((await receive_until(ws, is_json("hello"))).data)
                assert hello["may_prompt"] is False and "token" in hello["prompt_refusal"]
                await ws.send_str(json.dumps(click))
                reply = json.loads((await receive_until(ws, is_json("reply"))).data)
                assert reply["id"] == 7 and reply["ok"] is False and reply["refused"] is True
            async with http.ws_connect(url + "/ws?token=" + TOKEN) as ws:
                hello = json.loads((await receive_until(ws, is_json("hello"))).data)
                assert hello["may_prompt"] is True
                await ws.send_str(json.dumps(click))
                reply = json.loads((await receive_until(ws, is_json("reply"))).data)
                assert reply["ok"] is False and "did not answer" in reply["error"]  # forwarded; no worker runs
            counters = server.stats.counters
            assert (counters["prompts_refused"], counters["prompts_forwarded"]) == (1, 1)

    asyncio.run(scenario())


def test_viewing_can_require_the_token_and_refusals_say_why(sock_dir: Path) -> None:
    settings = make_settings(sock_dir, token=TOKEN, view_requires_token=True)

    async def scenario() -> None:
        async with running(settings) as (server, url), aiohttp.ClientSession() as http:
            async with http.get(url + "/") as page:
                assert page.status == 403 and "needs the access token" in await page.text()
            async with http.get(url + "/api/status", headers={"Authorization": "Bearer wrong-token-0123456"}) as r:
                assert r.status == 403 and "not this display's token" in (await r.json())["error"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + "/ws")
            assert refused.value.status == 403
            async with http.get(url + "/?token=" + TOKEN) as page:
                assert page.status == 200
            async with http.ws_connect(url + "/ws?token=" + TOKEN) as ws:
                assert json.loads((await receive_until(ws, is_json("hello"))).data)["may_prompt"] is True
            # a page of another site must not drive the worker through the operator's browser
            with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
                await http.ws_connect(url + "/ws?token=" + TOKEN, headers={"Origin": "http://evil.example"})
            assert foreign.value.status == 403
            assert server.stats.counters["views_refused"] == 4

    asyncio.run(scenario())


def test_malformed_page_messages_are_counted_rejections_with_a_reply(sock_dir: Path) -> None:
    settings = make_settings(sock_dir)
    bad: list[str | bytes] = [
        "not json", "[1, 2]", json.dumps({"type": "launch"}), json.dumps({"type": "prompt", "op": "explode"}),
        json.dumps({"type": "prompt", "op": "click", "object_id": 0, "x": 1, "y": 1}),
        json.dumps({"type": "prompt", "op": "click", "object_id": True, "x": 1, "y": 1}),
        json.dumps({"type": "prompt", "op": "click", "object_id": 1, "x": "NaN", "y": 1}),
        json.dumps({"type": "prompt", "op": "click", "object_id": 1, "x": 1, "y": 1, "positive": "yes"}),
        json.dumps({"type": "prompt", "op": "remove"}), json.dumps({"type": "select", "stream": "../etc"}),
        json.dumps({"type": "select", "id": "seven", "stream": "cam1"}), b"\x00\x01binary",
    ]

    async def scenario() -> None:
        async with running(settings) as (server, url), aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "/ws") as ws:
                for message in bad:
                    await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
                    error = json.loads((await receive_until(ws, is_json("error"))).data)
                    assert error["error"]
                await ws.send_str(json.dumps({"type": "select", "id": 3, "stream": "cam1"}))  # still served
                selected = json.loads((await receive_until(ws, is_json("selected"))).data)
                assert selected == {"type": "selected", "id": 3, "stream": "cam1"}
            assert server.stats.counters["page_messages_rejected"] == len(bad)
            assert server.stats.counters["prompts_forwarded"] == 0

    asyncio.run(scenario())


def test_a_slow_page_gets_the_newest_frame_not_a_queue(sock_dir: Path) -> None:
    settings = make_settings(sock_dir, max_fps=2.0)  # one frame per 0.5 s: the page cannot keep up
    broadcast = Broadcast(settings)

    async def scenario() -> None:
        async with running(settings) as (server, url), aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "/ws") as ws:
                first = await receive_until(ws, is_frame, nudge=broadcast.send)
                template = decode_frame(first.data)[0]
                # 30 frames arrive within one send interval: only the last may go out
                for version in range(10_001, 10_031):
                    header = {**template, "version": version, "objects": []}
                    server.hub.publish(Frame("cam0", version, header, encode_frame(header, None, [])))
                newest = await receive_until(ws, lambda m: is_frame(m, 0)
                                             and decode_frame(m.data)[0]["version"] >= 10_001)
                assert decode_frame(newest.data)[0]["version"] == 10_030
                (client,) = server.hub.clients
                assert client.slot.skipped >= 29
                assert server.stats.counters["frames_skipped"] >= 29

    try:
        asyncio.run(scenario())
    finally:
        broadcast.close()
