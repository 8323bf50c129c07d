"""Prompt events: every prompt the worker handled goes out on the results link, in order with the
results, through the publisher to every subscriber of prompt/<stream>/ (recorders keep sessions this way)."""

from __future__ import annotations

import numpy as np

from samsa_stream.display.subscriber import Subscriber
from samsa_stream.protocol import (
    ClickPrompt,
    MaskBroadcast,
    PromptEvent,
    SegmentationResult,
    StatePrompt,
    StatusPrompt,
    UndoPrompt,
)
from samsa_stream.publisher.process import Publisher
from samsa_stream.settings import load_settings
from samsa_stream.worker.core import Worker
from tests.conftest import phantom_frames


def test_the_worker_records_each_prompt_it_handled_and_not_queries() -> None:
    cam, frames = phantom_frames(count=3)
    worker = Worker(load_settings())
    for frame in frames:
        worker.accept(frame)
    x, y = cam.centre(0, 1)
    assert worker.handle_prompt(ClickPrompt(request_id=7, stream_id="cam0", object_id=1, x=x, y=y, frame_id=1)).ok
    assert not worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=2, x=x, y=y, positive=False)).ok
    worker.handle_prompt(StatePrompt(stream_id="cam0"))
    worker.handle_prompt(StatusPrompt())
    assert worker.handle_prompt(UndoPrompt(stream_id="cam0")).ok
    click, refused, undo = worker.take_events()
    assert (click.ok, click.frame_id, click.revision, click.request["request_id"]) == (True, 1, 1, 7)
    assert click.request == {"op": "click", "request_id": 7, "object_id": 1, "x": x, "y": y, "positive": True,
                             "frame_id": 1}
    assert not refused.ok and "first click must be positive" in refused.error and refused.frame_id == 2
    assert undo.ok and undo.request["op"] == "undo" and undo.revision == 2
    assert worker.take_events() == []
    # What a replay sends again is the same click, on the frame it applied on.
    again = click.prompt()
    assert isinstance(again, ClickPrompt) and (again.x, again.y, again.frame_id, again.stream_id) == (x, y, 1, "cam0")


def test_the_publisher_keeps_prompt_events_between_the_results_around_them() -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)

    def result(frame_id: int) -> list:
        return SegmentationResult("cam0", frame_id, frame_id, rgb, [], "spectral").to_parts()

    event = PromptEvent("cam0", {"op": "reset", "request_id": 1}, True, frame_id=2, revision=3).to_parts()
    pub = Publisher(load_settings())
    sent = list(pub.on_results([result(1), result(2), event, result(3), event]))
    order = [(b[0].split(b"/")[0], b[1]) for b in sent]
    kinds = [k for k, _ in order if k in (b"mask", b"prompt")]
    assert kinds == [b"mask", b"prompt", b"mask", b"prompt"]
    masks = [MaskBroadcast.from_parts([bytes(p) for p in b[1:]]) for b in sent if b[0] == b"mask/cam0/"]
    assert [m.frame_id for m in masks] == [2, 3] and pub.stats.counters["results_superseded"] == 1
    events = [PromptEvent.from_parts([bytes(p) for p in b[1:]]) for b in sent if b[0] == b"prompt/cam0/"]
    assert [e.seq for e in events] == [1, 2] and {e.publisher for e in events} == {pub.instance}
    assert all(not t.startswith(b"prompt/") for t in pub.cache)  # news once: never replayed to late joiners

    display = Subscriber(load_settings(), ["cam0"], kinds=("prompt",))
    try:
        updates = [display.handle(b) for b in sent if b[0] == b"prompt/cam0/"]
        assert [u.event.revision for u in updates if u is not None] == [3, 3]
    finally:
        display.close()


def test_the_worker_reports_its_streams_and_objects_as_gauges() -> None:
    cam, frames = phantom_frames(count=1)
    worker = Worker(load_settings())
    worker.accept(frames[0])
    for oid in (1, 2):
        assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=oid, x=cam.centre(oid - 1, 0)[0],
                                                y=cam.centre(oid - 1, 0)[1])).ok
    worker.dirty_streams()
    assert worker.stats.snapshot()["gauges"] == {"streams": 1, "objects": 2}
