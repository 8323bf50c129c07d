"""The worker's loop in one process: frames over an in-process link, results into an in-process
sink, prompts over an inproc:// socket; no processes, no files."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from samsa_stream.display.console import PromptConsole
from samsa_stream.ingest.process import run_ingest
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import wait_until
from samsa_stream.protocol import ClickPrompt, CubeFrame, PromptEvent, SegmentationResult, StatusPrompt
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import Settings, load_settings
from samsa_stream.transport import FrameSender, InProcessLink, InProcessResultSink, SocketFactory
from samsa_stream.worker import core
from samsa_stream.worker.engines.base import Engine, FrameContext, Segmentation
from samsa_stream.worker.process import run_worker
from tests.conftest import phantom_frames

_ids = itertools.count()


class StubEngine(Engine):
    """Masks nothing; ``delay_s`` of work per frame (a sleep standing in for a slow GPU), optional faults,
    and ``hold(stream)``: the next frame of that stream waits in ``prepare`` until the test lets it go."""

    name = "stub"

    def __init__(self, delay_s: float = 0.0, fail_frames: frozenset[int] = frozenset()) -> None:
        self.delay_s, self.fail_frames = delay_s, fail_frames
        self.holds: dict[str, tuple[threading.Event, threading.Event]] = {}

    def hold(self, stream_id: str) -> tuple[threading.Event, threading.Event]:
        """(entered, release): ``entered`` is set once the loop is inside that stream's segmentation."""
        self.holds[stream_id] = (threading.Event(), threading.Event())
        return self.holds[stream_id]

    def prepare(self, frame: CubeFrame) -> FrameContext:
        held = self.holds.pop(frame.stream_id, None)
        if held is not None:
            held[0].set()
            held[1].wait(20)
        if frame.frame_id in self.fail_frames:
            raise RuntimeError(f"engine fault on frame {frame.frame_id}")
        time.sleep(self.delay_s)  # the work itself, not a wait for anything
        return FrameContext(frame)

    def segment(self, ctx: FrameContext, obj: Any, memory: Any) -> Segmentation:
        h, w = ctx.frame.rgb.shape[:2]
        return Segmentation(np.zeros((h, w), bool), 1.0)


class LoopUnderTest:
    """``run_worker`` in a thread; ``send`` frames, ``console`` for prompts, ``results`` as they arrive."""

    def __init__(self, engine: Engine | None = None, link: InProcessLink | None = None, **overrides: Any) -> None:
        self.ctx = zmq.Context()
        endpoint = f"inproc://prompts-{next(_ids)}"
        base = {"endpoints": {"prompts": endpoint}, "sockets": {"poll_ms": 20}, "log": {"stats_interval_s": 3600}}
        self.settings: Settings = load_settings(overrides={**base, **overrides})
        self.link = link or InProcessLink(capacity=4)
        self.sink = InProcessResultSink(capacity=1000)
        self.sender = self.link.sender(ProcessStats("test-camera"))
        self.stop = threading.Event()
        self.engine = engine
        self.stats: ProcessStats | None = None
        self.error: BaseException | None = None
        self.results: list[SegmentationResult] = []
        self.events: list[PromptEvent] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._console_sockets = SocketFactory(self.settings, context=self.ctx)
        self.console = PromptConsole(self.settings, "cam0", sockets=self._console_sockets)
        assert wait_until(self.console.answers, timeout=20, interval=0.05), "the worker loop did not answer"

    def _run(self) -> None:
        try:
            self.stats = run_worker(self.settings, self.stop, engine=self.engine, link=self.link, results=self.sink,
                                    context=self.ctx)
        except BaseException as exc:  # the test reports it; a dead loop must not look like a slow one
            self.error = exc

    def status(self) -> dict[str, Any]:
        return self.console.request("status").state

    def counters(self) -> dict[str, int]:
        return self.status()["counters"]

    def collect(self) -> list[SegmentationResult]:
        """The results so far (the prompt events between them are kept apart, in ``events``)."""
        for message in self.sink.take_all():
            if isinstance(message, SegmentationResult):
                self.results.append(message)
            else:
                self.events.append(message)
        return self.results

    def wait_results(self, predicate: Any, timeout: float = 20) -> bool:
        return wait_until(lambda: self.error is None and predicate(self.collect()), timeout=timeout, interval=0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.console.close()
        self._console_sockets.close()
        self.sender.close()
        self.ctx.term()
        assert not self.thread.is_alive(), "the worker loop did not stop"
        assert self.error is None, f"the worker loop died: {self.error!r}"


@pytest.fixture
def make_loop() -> Iterator[Any]:
    loops: list[LoopUnderTest] = []

    def make(*args: Any, **kwargs: Any) -> LoopUnderTest:
        loops.append(LoopUnderTest(*args, **kwargs))
        return loops[-1]

    yield make
    for loop in loops:
        loop.close()


def test_frames_in_results_out_and_clicks_answered(make_loop: Any) -> None:
    loop = make_loop()  # the spectral engine, for real masks
    cam, frames = phantom_frames(count=6, motion_px=1.0)
    assert loop.sender.send(frames[0])
    assert wait_until(lambda: loop.status()["streams"].get("cam0", {}).get("last_frame_id") == 0, timeout=10)
    assert loop.console.click(1, *cam.centre(0, 0), frame_id=0).ok
    for frame in frames[1:]:
        assert wait_until(lambda f=frame: loop.sender.send(f), timeout=10)  # a full link refuses; retry
        assert loop.wait_results(lambda got, f=frame: any(r.frame_id == f.frame_id for r in got))
    last = [r for r in loop.collect() if r.frame_id == frames[-1].frame_id][-1]
    (obj,) = last.objects
    assert obj.mask[int(cam.centre(0, 5)[1]), int(cam.centre(0, 5)[0])]
    assert [h[0] for h in last.hops] == ["ingest_out", "worker_in", "worker_out"]
    counters = loop.counters()
    assert counters["results_sent"] == counters["frames_processed"] + counters.get("prompt_refreshes", 0)
    assert "loop_faults" not in counters


def test_bad_messages_and_engine_faults_are_counted_and_survived(make_loop: Any) -> None:
    loop = make_loop(engine=StubEngine(fail_frames=frozenset({2})))
    _, frames = phantom_frames(count=4)
    assert loop.sender.send(frames[0])
    assert wait_until(lambda: "cam0" in loop.status()["streams"], timeout=10)
    assert loop.console.click(1, 10, 10).ok
    for parts in ([b"frame/cam0/"], [b"frame/cam0/", b"\xc1 not msgpack"], [b"frame/cam0/", b"\x80"]):
        assert wait_until(lambda p=parts: loop.link.put(p), timeout=10)
    for frame in frames[1:]:
        assert wait_until(lambda f=frame: loop.sender.send(f), timeout=10)
        assert wait_until(lambda f=frame: loop.status()["streams"]["cam0"]["last_frame_id"] == f.frame_id, 10)
    assert loop.wait_results(lambda got: any(r.frame_id == 3 for r in got))
    counters = loop.counters()
    assert counters["frames_rejected"] == 3 and counters["frames_failed"] == 1, counters
    assert 2 not in {r.frame_id for r in loop.collect()}
    assert "loop_faults" not in counters


def test_prompt_changing_the_streams_between_segmentations_is_safe(make_loop: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts are served between streams while segmenting; one that adds or drops streams (as a click on
    a new stream once did) must not break the iteration: it used to raise 'dictionary changed size'."""
    engine = StubEngine()
    loop = make_loop(engine=engine)
    frames = {sid: phantom_frames(count=2, stream_id=sid)[1] for sid in ("camX", "camA", "camB")}
    for sid in frames:
        assert loop.sender.send(frames[sid][0]) or wait_until(lambda s=sid: loop.sender.send(frames[s][0]), 10)
    assert wait_until(lambda: set(frames) <= set(loop.status()["streams"]), timeout=10)
    x_in, x_go = engine.hold("camX")  # the first segmentation of camX with an object: right after this click
    assert loop.console.request("click", stream_id="camX", object_id=1, x=5, y=5).ok
    assert x_in.wait(20)  # the loop is busy with camX: the next two clicks queue up
    a_in, a_go = engine.hold("camA")
    sock = loop.console.sock
    for request_id, sid in ((101, "camA"), (102, "camB")):
        sock.send_multipart(ClickPrompt(request_id=request_id, stream_id=sid, object_id=1, x=5.0, y=5.0).to_parts())
    x_go.set()
    assert a_in.wait(20)  # segmenting camA, with camB waiting its turn in the same pass

    original = core.Worker.answer

    def answer(self: core.Worker, parts: list[Any]) -> Any:
        for n in range(2):
            self.streams.setdefault(f"new{len(self.streams)}-{n}", core.StreamState())  # the dict grows
        self.streams.pop("camB", None)  # and the stream waiting its turn goes away
        return original(self, parts)

    monkeypatch.setattr(core.Worker, "answer", answer)
    sock.send_multipart(StatusPrompt(request_id=103).to_parts())  # served right after camA's result
    a_go.set()
    # A result of a frame sent now shows the loop went on past that pass (its replies may come sooner).
    assert wait_until(lambda: loop.sender.send(frames["camX"][1]), timeout=10)
    assert loop.wait_results(lambda got: any((r.stream_id, r.frame_id) == ("camX", 1) for r in got))
    assert loop.error is None and loop.thread.is_alive()
    status = loop.status()
    assert "loop_faults" not in status["counters"], status["counters"]
    assert "camB" not in status["streams"]


class CountingLink(InProcessLink):
    """An in-process link that counts the frames the camera has written, for an engine paced by the camera."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.written = 0
        self._changed = threading.Condition()

    def sender(self, stats: ProcessStats) -> FrameSender:
        inner, link = super().sender(stats), self

        class Counting(FrameSender):
            def send(self, frame: CubeFrame) -> bool:
                sent = inner.send(frame)
                with link._changed:
                    link.written += 1
                    link._changed.notify_all()
                return sent

            def close(self) -> None:
                inner.close()

        return Counting()

    def wait_written(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.written >= count, timeout)


class CameraPacedEngine(StubEngine):
    """Works on each frame for as long as the camera takes to write ``frames`` more: slower than the
    camera by that factor however fast or slow the machine is."""

    def __init__(self, link: CountingLink, frames: int) -> None:
        super().__init__()
        self.link, self.frames = link, frames
        self.worked = 0  # frames worked on (the worker calls the engine only for streams with objects)

    def prepare(self, frame: CubeFrame) -> FrameContext:
        assert self.link.wait_written(self.link.written + self.frames, timeout=30), "the camera stopped"
        self.worked += 1
        return FrameContext(frame)


def test_worker_ten_times_slower_than_the_camera_publishes_every_result(make_loop: Any) -> None:
    """The camera laps a 3-slot shared-memory ring three times over while each frame is segmented; the
    reader's lease keeps that frame's slot, so every result computed is published."""
    link = CountingLink(capacity=2, shared_memory=True, slots=3)
    engine = CameraPacedEngine(link, frames=10)
    loop = make_loop(engine=engine, link=link)
    camera_settings = load_settings(overrides={
        "ingest": {"fps": 100.0, "phantom": {"height": 60, "width": 80, "bands": 24}},
        "sockets": {"poll_ms": 20}, "log": {"stats_interval_s": 3600}})
    camera_stop = threading.Event()
    camera_stats: list[ProcessStats] = []
    camera = threading.Thread(target=lambda: camera_stats.append(
        run_ingest(camera_settings, camera_stop, link=link)), daemon=True)
    camera.start()
    try:
        assert wait_until(lambda: "cam0" in loop.status()["streams"], timeout=20)
        x, y = PhantomCamera(camera_settings.ingest.phantom).centre(0, 0)
        assert wait_until(lambda: loop.console.click(1, x, y).ok, timeout=10)
        assert loop.wait_results(lambda got: sum(bool(r.objects) for r in got) >= 5, timeout=60)
        loop.stop.set()
        loop.thread.join(20)
    finally:
        camera_stop.set()
        camera.join(20)
    assert not camera.is_alive() and not loop.thread.is_alive()
    counters = loop.stats.counters if loop.stats else {}
    segmented = counters["frames_processed"] + counters["prompt_refreshes"]
    assert segmented >= 5 and counters["frames_overwritten"] == 0, counters
    assert counters["results_sent"] == segmented, counters
    assert counters["results_dropped"] == 0, counters
    assert engine.worked >= 5 and camera_stats[0].counters["frames_captured"] >= 10 * engine.worked, (
        camera_stats[0].counters, counters)
