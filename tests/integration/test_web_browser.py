"""The browser display in a real headless Chromium: the node on the phantom, ``samsa-stream web`` as its
own process, clicks in the page become masks drawn by the page, and the stale marker follows the worker.

With SAMSA_WRITE_SCREENSHOTS=1 the screenshots go to docs/images/ (web-two-objects.png, web-stale.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from samsa_stream.node import LocalNode, free_tcp_port, wait_until
from samsa_stream.web import serving
from tests.integration.conftest import phantom, start_all

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WAIT_MS = 60_000
# Read at import: tests/conftest.py clears every SAMSA_ variable before each test runs.
WRITE_SCREENSHOTS = os.environ.get("SAMSA_WRITE_SCREENSHOTS") == "1"
SETTINGS = {"ingest": {"fps": 10.0, "phantom": {"height": 180, "width": 240, "bands": 24, "motion_px": 0.5}},
            "display": {"stale_after_s": 1.0}, "log": {"level": "INFO", "stats_interval_s": 1.0}}


def near_edge(labels: np.ndarray, centre: tuple[float, float]) -> tuple[float, float]:
    """A pixel of the object 2 to 4 pixels inside its edge, far from its centre: a negative click there
    cuts the part of the object that looks like it (the object's spectrum varies across it)."""
    inside = cv2.distanceTransform(labels.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero((inside > 2) & (inside < 4))
    i = int(np.argmax((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2))
    return float(xs[i]), float(ys[i])


def test_clicks_in_the_page_become_masks_and_the_stale_marker_follows_the_worker(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install the distribution's chromium package to run browser tests)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    shots = DOCS_IMAGES if WRITE_SCREENSHOTS else tmp_path
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}"
    with LocalNode(SETTINGS, run_dir=tmp_path) as node:
        try:
            start_all(node)
            node.start("web", "--port", str(port))
            assert wait_until(lambda: serving(url), timeout=30, interval=0.1), "the web server did not come up"
            cam = phantom(node)
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                try:
                    page = browser.new_page(viewport={"width": 1100, "height": 640})
                    page.goto(url + "/")
                    _session(page, cam, node, shots)
                finally:
                    browser.close()
            status = node.stats("web") if node.stop("web") == 0 else {}
            assert status["counters"]["prompts_forwarded"] >= 3 and status["counters"]["frames_sent"] > 0
        except BaseException:
            for name in node.procs:  # a failing test shows what each process said
                print(f"--- {name} log ---\n{node.log_text(name)[-3000:]}")
            raise


def _session(page: Any, cam: Any, node: LocalNode, shots: Path) -> None:
    live = "() => window.samsa.header && window.samsa.header.size && !window.samsa.stale"
    page.wait_for_function(live, timeout=WAIT_MS)
    assert page.evaluate("window.samsa.mayPrompt"), "a loopback page may send prompts"

    def click(x: float, y: float, shift: bool = False) -> None:
        """A click on image pixel (x, y), converted to page coordinates through the canvas's box."""
        box = page.locator("#canvas").bounding_box()
        h, w = page.evaluate("window.samsa.header.size")
        px, py = box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h
        if shift:
            page.keyboard.down("Shift")
        page.mouse.click(px, py)
        if shift:
            page.keyboard.up("Shift")

    def area(object_id: int) -> int:
        return int(page.evaluate(f"window.samsa.areas[{object_id}] || 0"))

    # positive click on the first object: its mask appears, drawn by the page, and the legend lists it
    frame_id = page.evaluate("window.samsa.header.frame_id")
    click(*cam.centre(0, frame_id))
    assert page.evaluate("window.samsa.markers.length") == 1, "the click marker shows before any mask"
    page.wait_for_function("() => (window.samsa.areas[1] || 0) > 200", timeout=WAIT_MS)
    page.wait_for_selector("#legend li[data-object-id='1']", timeout=WAIT_MS)
    first = int((cam.labels(page.evaluate("window.samsa.header.frame_id")) == 1).sum())
    assert 0.7 * first < area(1) < 1.3 * first, (area(1), first)

    # a negative click (shift) inside the object near its edge cuts part of it away
    before = area(1)
    frame_id = page.evaluate("window.samsa.header.frame_id")
    click(*near_edge(cam.labels(frame_id) == 1, cam.centre(0, frame_id)), shift=True)
    page.wait_for_function(f"() => (window.samsa.areas[1] || 0) < 0.85 * {before}", timeout=WAIT_MS)
    reply = page.evaluate("window.samsa.lastReply")
    assert reply["ok"], reply

    # a second object with the key 'n', then a click on it
    page.keyboard.press("n")
    assert page.evaluate("window.samsa.objectId") == 2
    frame_id = page.evaluate("window.samsa.header.frame_id")
    click(*cam.centre(1, frame_id))
    page.wait_for_function("() => (window.samsa.areas[2] || 0) > 200", timeout=WAIT_MS)
    page.wait_for_selector("#legend li[data-object-id='2']", timeout=WAIT_MS)
    page.wait_for_function(live, timeout=WAIT_MS)
    page.screenshot(path=str(shots / "web-two-objects.png"))

    # the worker stops: the marker appears; it starts again: the marker goes once new masks arrive
    node.stop("worker")
    page.wait_for_function("() => window.samsa.stale && document.body.dataset.stale === 'true'", timeout=WAIT_MS)
    assert page.locator("#stale").is_visible()
    page.screenshot(path=str(shots / "web-stale.png"))
    node.start("worker")
    stalled_at = page.evaluate("window.samsa.framesReceived")
    page.wait_for_function(live, timeout=WAIT_MS)
    assert not page.locator("#stale").is_visible()
    # live again means new frames: wait for one more than at the stall (no count that depends on timing)
    page.wait_for_function(f"() => window.samsa.framesReceived > {stalled_at}", timeout=WAIT_MS)
