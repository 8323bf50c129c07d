"""The headless viewer in-process against a test publisher socket, and its argument checks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq

from samsa_stream.display.viewer import run_view
from samsa_stream.errors import CommandError
from samsa_stream.node import wait_until
from samsa_stream.settings import SettingsError, load_settings
from tests.display.test_subscriber import mask_message, overlay_message


def test_headless_view_records_masks_and_overlays(tmp_path: Path) -> None:
    out = tmp_path / "view"
    settings = load_settings(overrides={"endpoints": {"broadcast": f"ipc://{tmp_path}/broadcast"},
                                        "view": {"headless": True, "out": str(out), "max_pngs": 1}})
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(settings.endpoints.broadcast)
    stop = threading.Event()
    viewer = threading.Thread(target=run_view, args=(settings, stop, tmp_path / "stats.json"))
    viewer.start()
    try:
        subscribed: set[bytes] = set()
        assert wait_until(lambda: pub.poll(100) and subscribed.add(pub.recv()) is None and len(subscribed) == 3, 10)
        assert subscribed == {b"\x01mask/cam0/", b"\x01overlay/cam0/", b"\x01stream/cam0/"}
        for parts in (mask_message(1), mask_message(1), [b"mask/cam0/", b"junk"], overlay_message(1),
                      overlay_message(2), mask_message(2, stream="cam0x", topic_stream="cam0")):
            pub.send_multipart(parts)
        log = out / "masks.jsonl"
        assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) == 1
                          and len(list(out.glob("overlay_*.png"))) == 1, timeout=10)
    finally:
        stop.set()
        viewer.join(10)
        pub.close()
        ctx.term()
    line = json.loads(log.read_text())
    assert line["seq"] == 1 and line["publisher"] == "a" * 16 and line["objects"][0]["label"] == "liver"
    counters = json.loads((tmp_path / "stats.json").read_text())["counters"]
    assert counters["masks_received"] == 1 and counters["replays_ignored"] == 1
    assert counters["overlays_received"] == 2 and counters["messages_rejected"] == 2


def test_a_window_needs_a_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(CommandError, match="no screen"):
        run_view(load_settings(), threading.Event())


def test_the_stream_must_be_a_stream_id() -> None:
    with pytest.raises(SettingsError, match="view.stream_id"):
        load_settings(overrides={"view": {"stream_id": "cam0/x"}})
    proc = subprocess.run([sys.executable, "-m", "samsa_stream", "view", "--stream", "cam0/x", "--headless"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "view.stream_id" in proc.stderr


def test_headless_view_marks_a_stream_that_goes_stale(tmp_path: Path) -> None:
    """No new mask for display.stale_after_s: one PNG of the last overlay with the stale marker and a
    'stale' line; a new mask makes it live again (and a later stall is marked again)."""
    import cv2

    out = tmp_path / "view"
    settings = load_settings(overrides={"endpoints": {"broadcast": f"ipc://{tmp_path}/broadcast"},
                                        "display": {"stale_after_s": 0.3},
                                        "view": {"headless": True, "out": str(out)}})
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(settings.endpoints.broadcast)
    stop = threading.Event()
    viewer = threading.Thread(target=run_view, args=(settings, stop, None))
    viewer.start()
    log = out / "masks.jsonl"

    def lines() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    try:
        subscribed: set[bytes] = set()
        assert wait_until(lambda: pub.poll(100) and subscribed.add(pub.recv()) is None and len(subscribed) == 3, 10)
        pub.send_multipart(mask_message(1))
        pub.send_multipart(overlay_message(1))
        assert wait_until(lambda: len(list(out.glob("overlay_*_stale.png"))) == 1, timeout=10)
        assert [line.get("stale", False) for line in lines()] == [False, True]
        pub.send_multipart(mask_message(2))
        assert wait_until(lambda: sum(line.get("stale", False) for line in lines()) == 2, timeout=10)
    finally:
        stop.set()
        viewer.join(10)
        pub.close()
        ctx.term()
    (marked,) = out.glob("overlay_*_stale.png")
    image = cv2.imread(str(marked))[..., ::-1]
    assert image[0, 0, 0] > 200 and image[0, 0, 2] < 60  # the amber frame
