"""``samsa-stream prompt`` against a real worker process, and with none running."""

from __future__ import annotations

import json
import subprocess
import sys

from samsa_stream.node import LocalNode
from tests.integration.conftest import FAST, console_for, latest_frame


def prompt_cli(node: LocalNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "samsa_stream", "prompt", *args], env=node.env,
                          capture_output=True, text=True, timeout=120)


def clicks(node: LocalNode) -> list[tuple[float, float, bool]]:
    proc = prompt_cli(node, "state", "--json")
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["ok"] and reply["error"] is None
    return [(c["x"], c["y"], c["positive"]) for o in reply["state"]["objects"] for c in o["clicks"]]


def test_prompt_command_drives_a_real_worker(tmp_path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        node.start("worker")
        node.start("ingest")
        console = console_for(node)
        try:
            latest_frame(console)
        finally:
            console.close()
        first = prompt_cli(node, "click", "10,12", "--name", "liver")
        assert first.returncode == 0, first.stderr
        assert "click on cam0: ok" in first.stdout and "object 1 'liver': +(10, 12)" in first.stdout
        second = prompt_cli(node, "--stream", "cam0", "click", "40,30,0@1")  # negative, on object 1
        assert second.returncode == 0, second.stderr
        assert clicks(node) == [(10, 12, True), (40, 30, False)]

        refused = prompt_cli(node, "click", "10000,5")
        assert refused.returncode == 1 and "refused click" in refused.stderr and "outside" in refused.stderr
        assert prompt_cli(node, "remove", "7").returncode == 1  # no such object
        assert clicks(node) == [(10, 12, True), (40, 30, False)]  # refusals change nothing

        assert prompt_cli(node, "undo", "1").returncode == 0
        assert clicks(node) == [(10, 12, True)]
        reset = prompt_cli(node, "reset")
        assert reset.returncode == 0 and "no objects" in reset.stdout
        assert clicks(node) == []


def test_prompt_without_a_worker_says_so(tmp_path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        proc = prompt_cli(node, "--timeout", "300", "reset")
        assert proc.returncode == 1 and "within 300 ms" in proc.stderr and "Traceback" not in proc.stderr
