"""Helpers for tests that run the node's real processes on loopback sockets."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from samsa_stream.display.console import PromptConsole
from samsa_stream.display.subscriber import Subscriber, Update
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import MaskBroadcast

FAST = {"ingest": {"fps": 25.0, "phantom": {"height": 60, "width": 80, "bands": 24, "motion_px": 2.0}},
        "log": {"level": "INFO", "stats_interval_s": 1.0}}


class Display:
    """A test display: the project's Subscriber on one stream's masks, on the real broadcast link."""

    def __init__(self, node: LocalNode, stream: str = "cam0") -> None:
        self.subscriber = Subscriber(node.settings, [stream], kinds=("mask",))

    @property
    def counters(self) -> Counter[str]:
        return self.subscriber.stats.counters

    def next_mask(self, timeout_s: float = 5.0) -> MaskBroadcast | None:
        update = self.subscriber.receive(int(timeout_s * 1000))
        return None if update is None else update.masks

    def masks(self, count: int, timeout_s: float = 10.0) -> list[MaskBroadcast]:
        out: list[MaskBroadcast] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            msg = self.next_mask(max(0.01, deadline - time.monotonic()))
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        self.subscriber.close()


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
    if not wait_until(console.answers, timeout=60, interval=0.2):  # a SAM2 worker builds its model first
        console.close()  # an open console would hold the context and hang the next test's shutdown
        pytest.fail("worker did not answer")
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


def worker_outcomes(console: PromptConsole) -> int:
    """Segmentations the worker has finished, whatever became of their results."""
    counters = status(console)["counters"]
    return sum(counters.get(k, 0) for k in ("results_sent", "results_dropped", "frames_failed", "frames_overwritten"))


def settle(node: LocalNode, console: PromptConsole, display: Subscriber, stream: str = "cam0") -> Update:
    """Stop the camera, wait until nothing moves any more and ``display`` shows the publisher's cached
    state of ``stream`` (what a display that joins now gets), and return that state.

    The camera stops only once ``display`` has shown a mask with objects: on a busy machine the
    first results can be dropped while the worker's link to the publisher is still coming up."""

    def shows_objects() -> bool:
        display.drain()
        shown = display.latest(stream)
        return shown is not None and shown.masks is not None and bool(shown.masks.objects)

    assert wait_until(shows_objects, timeout=60, interval=0.1), "no mask with objects reached the display"
    node.stop("ingest")
    agreed: list[tuple[str, int] | None] = []

    def idle() -> bool:
        before = worker_outcomes(console)
        with Subscriber(node.settings, [stream], kinds=("mask",)) as probe:
            cached = probe.receive(5000)
        display.drain()
        shown = display.latest(stream)
        same = (cached is not None and shown is not None and worker_outcomes(console) == before
                and (shown.publisher, shown.seq) == (cached.publisher, cached.seq))
        agreed.append((cached.publisher, cached.seq) if same and cached is not None else None)
        return len(agreed) >= 2 and agreed[-1] is not None and agreed[-1] == agreed[-2]

    assert wait_until(idle, timeout=60, interval=0.1), f"the pipeline did not settle: {agreed[-5:]}"
    shown = display.latest(stream)
    assert shown is not None
    return shown
