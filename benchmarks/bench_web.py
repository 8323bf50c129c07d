"""The browser display on loopback: capture-to-browser latency and the bytes sent to one page.

Runs the node (publisher, worker, ingest with the phantom camera) and ``samsa-stream web`` as
separate processes, clicks every phantom object, then listens as a page for ``--seconds``: a Python
WebSocket client (aiohttp) timing each frame from its capture to its receipt, and, when Chromium is
at /usr/bin/chromium, the page itself in headless Chromium (its own capture-to-screen measure).
Prints JSON.

    python benchmarks/bench_web.py --height 480 --width 640 --objects 3 --fps 10 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from samsa_stream.display.console import PromptConsole
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, free_tcp_port, wait_until
from samsa_stream.web import serving
from samsa_stream.web.frames import decode_frame

CHROMIUM = Path("/usr/bin/chromium")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {"p50": round(float(np.percentile(arr, 50)), 2), "p95": round(float(np.percentile(arr, 95)), 2),
            "max": round(float(arr.max()), 2), "n": int(arr.size)}


async def listen(url: str, seconds: float) -> dict[str, Any]:
    """One page's worth of frames for ``seconds``: latency from capture to receipt, bytes and frames per second."""
    latencies: list[float] = []
    at_server: list[float] = []
    sizes: list[int] = []
    image_bytes: list[int] = []
    seen: set[tuple[str, int]] = set()
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.01, end - loop.time()))
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            received_ms = time.time_ns() / 1e6
            header, image, _ = decode_frame(msg.data)
            sizes.append(len(msg.data))
            image_bytes.append(len(image or b""))
            key = (header["publisher"], header["seq"])
            if header["seq"] is not None and key not in seen and header["objects"]:
                seen.add(key)
                latencies.append(received_ms - header["capture_ms"])
                at_server.append(header["server_latency_ms"])
    return {"capture_to_client_ms": percentiles(latencies), "capture_to_web_server_ms": percentiles(at_server),
            "web_server_to_client_ms": percentiles([a - b for a, b in zip(latencies, at_server, strict=True)]),
            "frames": len(sizes),
            "frames_per_s": round(len(sizes) / seconds, 2), "bytes_per_s": round(sum(sizes) / seconds),
            "image_bytes_per_frame": round(float(np.mean(image_bytes)), 1) if image_bytes else 0,
            "mask_and_header_bytes_per_frame": round(float(np.mean(sizes) - np.mean(image_bytes)), 1) if sizes else 0}


def browser(url: str, seconds: float) -> dict[str, Any]:
    """The page's own capture-to-screen latencies (browser clock) in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            page.wait_for_function("() => window.samsa.header && !window.samsa.stale", timeout=60_000)
            page.evaluate("window.samsa.latencies.length = 0")
            page.wait_for_timeout(seconds * 1000)  # a benchmark listens for a set time; not a test
            values = page.evaluate("window.samsa.latencies.slice()")
            frames = page.evaluate("window.samsa.framesReceived")
        finally:
            chromium.close()
    return {"capture_to_screen_ms": percentiles(values), "frames_received": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bands", type=int, default=32)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-browser", action="store_true", help="only the Python client")
    args = parser.parse_args()
    phantom = {"height": args.height, "width": args.width, "bands": args.bands, "objects": args.objects,
               "motion_px": 1.0}
    overrides = {"ingest": {"fps": args.fps, "phantom": phantom}, "log": {"level": "WARNING"}}
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"image": [args.height, args.width], "bands": args.bands, "objects": args.objects,
                           "fps": args.fps, "seconds": args.seconds}
    with LocalNode(overrides) as node:
        for proc in ("publisher", "worker", "ingest"):
            node.start(proc)
        node.start("web", "--port", str(port))
        console = PromptConsole(node.settings, "cam0")
        try:
            def frame() -> int | None:
                streams = console.request("status").state.get("streams", {}) if console.answers() else {}
                return streams.get("cam0", {}).get("last_frame_id")

            if not wait_until(lambda: frame() is not None and serving(url), timeout=60, interval=0.2):
                raise SystemExit("the node or the web server did not come up")
            frame_id = frame()
            cam = PhantomCamera(node.settings.ingest.phantom)
            for obj in range(args.objects):
                x, y = cam.centre(obj, frame_id)
                reply = console.click(obj + 1, x, y, frame_id=frame_id)
                if not reply.ok:
                    raise SystemExit(f"click on object {obj + 1} refused: {reply.error}")
        finally:
            console.close()
        out["python_client"] = asyncio.run(listen(url, args.seconds))
        if not args.no_browser and CHROMIUM.exists():
            out["browser"] = browser(url, args.seconds)
        node.stop("web")
        web = node.stats("web")
        out["server"] = {k: web.get("counters", {}).get(k, 0) for k in ("frames_composed", "frames_sent",
                                                                         "frames_skipped", "bytes_sent")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
