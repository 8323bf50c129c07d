"""``samsa-stream status`` against a real worker process, and with none running."""

from __future__ import annotations

import json
import subprocess
import sys

from samsa_stream.display.subscriber import Subscriber
from samsa_stream.node import LocalNode
from tests.integration.conftest import FAST, console_for, latest_frame


def status_cli(node: LocalNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "samsa_stream", "status", *args], env=node.env,
                          capture_output=True, text=True, timeout=60)


def test_status_reports_counters_and_objects(tmp_path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        for name in ("publisher", "worker", "ingest"):
            node.start(name)
        console = console_for(node)
        try:
            latest_frame(console)
            assert console.click(1, 10, 10, label="liver").ok
        finally:
            console.close()
        proc = status_cli(node, "--json")
        assert proc.returncode == 0, proc.stderr
        state = json.loads(proc.stdout)
        assert state["counters"]["frames_processed"] > 0 and state["engine"] == "spectral"
        assert state["streams"]["cam0"]["objects"][0]["label"] == "liver"
        published = state["publisher_streams"]["cam0"]
        assert published["displays"] == 0 and published["engine"] == "spectral" and not published["stale"]
        with Subscriber(node.settings, ["cam0"]) as display:  # a display: the publisher counts it
            assert display.receive(20_000) is not None
            displays = json.loads(status_cli(node, "--json").stdout)["publisher_streams"]["cam0"]["displays"]
        assert displays == 1
        text = status_cli(node).stdout
        assert "frames_processed" in text and "1 'liver' (1 click(s))" in text
        assert "publisher stream cam0: live, 0 display(s) subscribed" in text


def test_status_without_a_worker_says_so(tmp_path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        proc = status_cli(node, "--timeout", "300")
        assert proc.returncode == 1 and "within 300 ms" in proc.stderr
