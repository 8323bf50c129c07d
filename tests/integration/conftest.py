"""Helpers for tests that run the node's real processes on loopback sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from samsa_stream.display.console import PromptConsole
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import MaskBroadcast, topic
from samsa_stream.transport import SocketFactory

FAST = {"ingest": {"fps": 25.0, "phantom": {"height": 60, "width": 80, "bands": 24, "motion_px": 2.0}},
        "log": {"level": "INFO", "stats_interval_s": 1.0}}


class Display:
    """A test display: a real SUB socket on the broadcast link."""

    def __init__(self, node: LocalNode, stream: str = "cam0") -> None:
        self.sockets = SocketFactory(node.settings)
        self.sub = self.sockets.socket("broadcast_in", subscribe=topic("mask", stream))

    def next_mask(self, timeout_s: float = 5.0) -> MaskBroadcast | None:
        if not self.sub.poll(int(timeout_s * 1000)):
            return None
        return MaskBroadcast.from_parts(self.sub.recv_multipart()[1:])

    def masks(self, count: int, timeout_s: float = 10.0) -> list[MaskBroadcast]:
        out: list[MaskBroadcast] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            msg = self.next_mask(max(0.01, deadline - time.monotonic()))
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        self.sockets.close()


@pytest.fixture(params=["ipc", "tcp"])
def node(request: pytest.FixtureRequest, tmp_path) -> Iterator[LocalNode]:
    with LocalNode(FAST, transport=request.param, run_dir=tmp_path) as n:
        yield n
        for name in n.procs:  # a failing test shows what each process said
            print(f"--- {name} log ---\n{n.log_text(name)[-3000:]}")


def start_all(node: LocalNode, *names: str) -> None:
    for name in names or ("publisher", "worker", "ingest"):
        node.start(name)


def console_for(node: LocalNode) -> PromptConsole:
    console = PromptConsole(node.settings, "cam0")
    assert wait_until(console.answers, timeout=20, interval=0.2), "worker did not answer"
    return console


def phantom(node: LocalNode) -> PhantomCamera:
    return PhantomCamera(node.settings.ingest.phantom)


def status(console: PromptConsole) -> dict[str, Any]:
    return console.request("status").state


def latest_frame(console: PromptConsole, stream: str = "cam0", timeout_s: float = 10.0) -> int:
    """Newest frame id the worker has, once it has one."""
    found: list[int] = []

    def ready() -> bool:
        sid = status(console).get("streams", {}).get(stream, {}).get("last_frame_id")
        if sid is not None:
            found.append(sid)
        return sid is not None

    assert wait_until(ready, timeout=timeout_s, interval=0.1), "no frame reached the worker"
    return found[-1]


def raw_socket(kind: int, endpoint: str, bind: bool) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    (sock.bind if bind else sock.connect)(endpoint)
    return ctx, sock
