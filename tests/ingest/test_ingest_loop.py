"""The ingest loop in one process, over an in-process frame link: frames out in order, bad captures
counted, and a stop honoured within about a second even while the source is stuck reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from samsa_stream.ingest.capture import Capture, SourceError
from samsa_stream.ingest.process import run_ingest
from samsa_stream.ingest.sources.base import Source
from samsa_stream.node import wait_until
from samsa_stream.protocol import CubeFrame
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import load_settings
from samsa_stream.transport import InProcessLink


def capture(k: int) -> Capture:
    cube = np.full((6, 8, 5), 0.1 + 0.01 * k, np.float32)
    return Capture(cube=cube, wavelengths_nm=np.linspace(450, 650, 5), timestamp_ns=k * 1_000_000)


class ScriptedSource(Source):
    """Yields what ``script`` says: a Capture, a SourceError, a callable run in the reader (a slow read)."""

    name = "scripted"

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.closed = False

    def captures(self) -> Iterator[Capture | SourceError]:
        for item in self.script:
            yield item() if callable(item) else item

    def close(self) -> None:
        self.closed = True


class Ingest:
    """``run_ingest`` in a thread, its frames read from the in-process link."""

    def __init__(self, source: Source, **ingest: Any) -> None:
        self.settings = load_settings(overrides={"ingest": {"pace": "fast", **ingest}, "sockets": {"poll_ms": 20},
                                                 "log": {"stats_interval_s": 3600}})
        self.link = InProcessLink(capacity=64)
        self.receiver = self.link.receiver(ProcessStats("test-worker"))
        self.stop = threading.Event()
        self.stats: ProcessStats | None = None
        self.error: BaseException | None = None
        self.frames: list[CubeFrame] = []
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self.thread.start()

    def _run(self, source: Source) -> None:
        try:
            self.stats = run_ingest(self.settings, self.stop, source=source, link=self.link)
        except BaseException as exc:  # the test looks at it
            self.error = exc

    def received(self) -> list[CubeFrame]:
        self.frames.extend(self.receiver.receive())
        return self.frames

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.receiver.close()
        self.link.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: lets a source that a test left blocked finish, so no thread outlives the test for long."""
    event = threading.Event()
    yield event
    event.set()


def test_frames_go_out_in_order_and_bad_captures_are_counted() -> None:
    source = ScriptedSource([capture(0), SourceError("cap1.npz: truncated"), capture(2),
                             Capture(cube=np.ones((4, 4), np.float32), wavelengths_nm=np.ones(4)), capture(4)])
    ingest = Ingest(source)
    try:
        ingest.thread.join(20)
        assert not ingest.thread.is_alive() and ingest.error is None  # the source ended, so did ingest
        frames = ingest.received()
        assert [f.frame_id for f in frames] == [0, 1, 2]  # ids count the frames that normalized
        np.testing.assert_allclose([f.cube[0, 0, 0] for f in frames], [0.1, 0.12, 0.14], rtol=1e-6)
        assert all(f.capture_ns > 0 for f in frames)
        counters = ingest.stats.counters if ingest.stats else {}
        assert counters["captures_rejected"] == 2 and counters["frames_sent"] == 3
        assert source.closed
    finally:
        ingest.close()


def test_frame_limit_ends_the_loop() -> None:
    ingest = Ingest(ScriptedSource([capture(k) for k in range(50)]), frames=4)
    try:
        ingest.thread.join(20)
        assert ingest.stats is not None and ingest.stats.counters["frames_captured"] == 4
        assert [f.frame_id for f in ingest.received()] == [0, 1, 2, 3]
    finally:
        ingest.close()


class CountingSource(ScriptedSource):
    """Counts the captures the reader pulled from it and when (monotonic ns)."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__(script)
        self.read_at: list[int] = []

    def captures(self) -> Iterator[Capture | SourceError]:
        for item in self.script:
            self.read_at.append(time.monotonic_ns())
            yield item


def test_at_the_fixed_pace_a_camera_is_read_at_the_tick_not_ahead() -> None:
    """A live camera read one capture ahead would send frames a period old, labelled fresh."""
    source = CountingSource([capture(k) for k in range(50)])
    ingest = Ingest(source, pace="fixed", fps=50.0, frames=5)
    try:
        ingest.thread.join(20)
        assert ingest.error is None and [f.frame_id for f in ingest.received()] == [0, 1, 2, 3, 4]
        assert len(source.read_at) == 5  # nothing read beyond the frames sent
        # Each frame's capture time is when the source delivered it, never after it was sent.
        for frame in ingest.frames:
            assert frame.capture_ns <= frame.hops[0][1], frame.hops
    finally:
        ingest.close()


def test_a_replay_is_read_one_capture_ahead() -> None:
    source = CountingSource([capture(k) for k in range(50)])
    ingest = Ingest(source, pace="fast", frames=5)
    try:
        ingest.thread.join(20)
        assert [f.frame_id for f in ingest.received()] == [0, 1, 2, 3, 4]
        assert len(source.read_at) > 5  # the next capture was read while the last went out
    finally:
        ingest.close()


@pytest.mark.parametrize("stuck_at", ["first", "later"])
def test_stop_is_honoured_while_the_source_is_stuck_reading(release: threading.Event, stuck_at: str) -> None:
    """A read that blocks for a minute (a huge capture on a slow disk) must not hold up a stop: the unit
    gives the process 10 s before SIGKILL."""
    stuck = threading.Event()

    def slow_read() -> Capture:
        stuck.set()
        release.wait(60)
        return capture(99)

    script: list[Any] = [slow_read] if stuck_at == "first" else [capture(0), capture(1), slow_read]
    ingest = Ingest(ScriptedSource(script))
    try:
        assert stuck.wait(20)
        if stuck_at == "later":
            assert wait_until(lambda: len(ingest.received()) == 2, timeout=20)
        started = time.monotonic()
        ingest.stop.set()
        ingest.thread.join(10)
        took = time.monotonic() - started
        assert not ingest.thread.is_alive(), "ingest did not stop while its source was stuck"
        assert took < 3.0, f"ingest took {took:.1f} s to stop"
        assert ingest.error is None and ingest.stats is not None
    finally:
        ingest.close()


def test_a_source_that_breaks_ends_ingest_with_its_traceback() -> None:
    def broken() -> Capture:
        raise KeyError("driver bug")

    ingest = Ingest(ScriptedSource([capture(0), broken]))
    try:
        ingest.thread.join(20)
        assert isinstance(ingest.error, KeyError)
        assert [f.frame_id for f in ingest.received()] == [0]
    finally:
        ingest.close()


def test_a_long_pacing_wait_keeps_the_watchdog_fed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow camera (or a gap in a recorded capture) must not look like a wedged ingest to systemd."""
    from samsa_stream import supervision
    from samsa_stream.ingest import process

    stop = threading.Event()

    class Counting:
        pings = 0

        def watchdog(self) -> None:
            self.pings += 1
            if self.pings == 3:
                stop.set()

    notifier = Counting()
    monkeypatch.setattr(process, "WATCHDOG_STEP_S", 0.01)
    monkeypatch.setattr(supervision, "current", lambda: notifier)
    pacer = process.Pacer("fixed", 0.001, stop)  # a frame every 1000 s
    pacer.wait(None)  # the first frame: due now
    pacer.wait(None)  # the second: due in 1000 s; returns once stopped, pinging meanwhile
    assert notifier.pings == 3
