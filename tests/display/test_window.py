"""The viewer's window on a real (virtual) X display: mouse clicks and keys become prompts.

Needs Xvfb and xdotool (``apt-get install xvfb xdotool``); skipped where they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from samsa_stream.node import LocalNode, wait_until
from tests.integration.conftest import console_for, status

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs Xvfb and xdotool")


@pytest.fixture
def xserver() -> Iterator[str]:
    """A private virtual X display; Xvfb picks a free display number and reports it."""
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "800x600x24"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield f":{proc.stdout.readline().strip()}"
    finally:
        proc.terminate()
        proc.wait(5)


def xdotool(display: str, *args: str) -> str:
    return subprocess.run(["xdotool", *args], capture_output=True, text=True,
                          env={**os.environ, "DISPLAY": display}).stdout


def objects(console) -> list[dict]:
    return status(console)["streams"].get("cam0", {}).get("objects", [])


def test_mouse_and_keys_become_prompts(xserver: str, tmp_path) -> None:
    with LocalNode({"ingest": {"fps": 10.0}}, run_dir=tmp_path) as node:
        node.env["DISPLAY"] = xserver
        for name in ("publisher", "worker", "ingest", "view"):
            node.start(name)
        console = console_for(node)
        try:
            window: list[str] = []

            def window_open() -> bool:
                window.extend(xdotool(xserver, "search", "--name", "samsa-stream").split())
                return bool(window)

            assert wait_until(window_open, timeout=20, interval=0.5), "no viewer window"
            wid = window[-1]
            time.sleep(1.0)  # the first overlay is on screen

            def click(button: str, x: int, y: int) -> None:
                xdotool(xserver, "mousemove", "--window", wid, str(x), str(y))
                time.sleep(0.2)
                xdotool(xserver, "click", button)

            click("1", 200, 170)  # the middle of the image area: a positive click on object 1
            assert wait_until(lambda: len(objects(console)) == 1, timeout=5)
            click("3", 120, 120)  # right button: a negative click on the same object
            assert wait_until(lambda: len(objects(console)[0]["clicks"]) == 2, timeout=5)
            first, second = objects(console)[0]["clicks"]
            assert first["positive"] and not second["positive"]
            h, w = node.settings.ingest.phantom.height, node.settings.ingest.phantom.width
            assert all(0 <= c["x"] < w and 0 <= c["y"] < h for c in (first, second))
            xdotool(xserver, "key", "--window", wid, "n")  # next clicks go to a new object
            time.sleep(0.3)
            click("1", 230, 200)
            assert wait_until(lambda: [o["id"] for o in objects(console)] == [1, 2], timeout=5), objects(console)
            xdotool(xserver, "key", "--window", wid, "u")  # undo: object 2's only click
            assert wait_until(lambda: [o["id"] for o in objects(console)] == [1], timeout=5)
            xdotool(xserver, "key", "--window", wid, "r")
            assert wait_until(lambda: objects(console) == [], timeout=5)
            xdotool(xserver, "key", "--window", wid, "q")
            assert node.wait("view", timeout=10) == 0
        finally:
            console.close()
