"""The process loop: a pass with work waiting does not wait for a socket."""

from __future__ import annotations

import threading

import pytest
import zmq

from samsa_stream.runtime import ProcessStats
from samsa_stream.transport import PollLoop


@pytest.mark.timeout(30)
def test_pending_work_is_taken_at_once_instead_of_after_the_idle_poll() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)  # never ready: without pending work every pass waits the whole poll_ms
    sock.bind("inproc://loop-test")
    loop = PollLoop(threading.Event(), poll_ms=600_000, stats=ProcessStats("test"))
    loop.add(sock, lambda: None)
    passes: list[int] = []

    def tick() -> bool:
        passes.append(len(passes))
        return len(passes) == 5

    try:
        loop.run(tick, pending=lambda: len(passes) < 5)  # would block 10 minutes per pass without ``pending``
        assert len(passes) == 5
    finally:
        sock.close(0)
        ctx.term()
