"""The publisher's message handling in-process: instance ids and per-stream seq, robustness against
whatever arrives on its sockets, and the rate limits on last-value replays."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.protocol import FrameImage, MaskBroadcast, ObjectMask, OverlayImage, SegmentationResult, StreamInfo
from samsa_stream.publisher import process
from samsa_stream.publisher.process import Publisher
from samsa_stream.publisher.replay import ReplayLimiter
from samsa_stream.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_publisher(clock: Clock | None = None, **publisher: Any) -> Publisher:
    return Publisher(load_settings(overrides={"publisher": publisher}), clock=clock or Clock())


def result(stream: str = "cam0", frame_id: int = 3, objects: int = 1) -> SegmentationResult:
    rgb = np.full((24, 32, 3), 90, np.uint8)
    masks = []
    for k in range(objects):
        mask = np.zeros((24, 32), bool)
        mask[4 + k:12 + k, 5:15] = True
        masks.append(ObjectMask(k + 1, f"obj{k + 1}", (255, 40 * k, 0), mask, 0.8))
    return SegmentationResult(stream, frame_id, 1_000, rgb, masks, "spectral", hops=[["worker_out", 5]],
                              notices=["check"])


DECODERS: dict[bytes, Any] = {b"mask": MaskBroadcast, b"overlay": OverlayImage, b"image": FrameImage,
                              b"stream": StreamInfo}


def decoded(broadcast: list[Any]) -> MaskBroadcast | OverlayImage | StreamInfo:
    return DECODERS[broadcast[0].split(b"/")[0]].from_parts([bytes(p) for p in broadcast[1:]])


def test_every_broadcast_names_this_run_and_numbers_results_per_stream() -> None:
    pub = make_publisher(overlay_every=2)
    other = make_publisher()
    assert re.fullmatch(r"[0-9a-f]{16}", pub.instance) and pub.instance != other.instance
    sent = [list(pub.on_results([result(s, i).to_parts()])) for i, s in enumerate(["cam0", "cam1", "cam0", "cam0"])]
    topics = [[b[0] for b in batch] for batch in sent]
    # cam0's 1st and 3rd results bring an overlay and image; cam1's first result does too (its own count)
    with_images = [[f"{k}/{s}/".encode() for k in ("mask", "stream", "overlay", "image")] for s in ("cam0", "cam1")]
    assert topics == [with_images[0], with_images[1], [b"mask/cam0/", b"stream/cam0/"], with_images[0]]
    messages = [decoded(b) for batch in sent for b in batch]
    assert {m.publisher for m in messages} == {pub.instance}
    assert [(m.stream_id, m.seq) for m in messages if isinstance(m, MaskBroadcast)] == [
        ("cam0", 1), ("cam1", 1), ("cam0", 2), ("cam0", 3)]
    assert pub.stats.counters["masks_published"] == 4


def test_only_the_newest_result_of_a_stream_is_published() -> None:
    pub = make_publisher()
    out = list(pub.on_results([result("cam0", 1).to_parts(), result("cam1", 1).to_parts(),
                               result("cam0", 2).to_parts()]))
    masks = [decoded(b) for b in out if b[0].startswith(b"mask/")]
    assert sorted((m.stream_id, m.frame_id) for m in masks) == [("cam0", 2), ("cam1", 1)]
    assert pub.stats.counters["results_superseded"] == 1


def test_an_overlay_that_fails_to_render_costs_only_the_overlay(monkeypatch: pytest.MonkeyPatch) -> None:
    pub = make_publisher()

    def broken(*args: Any, **kwargs: Any) -> np.ndarray:
        raise MemoryError("no room for the overlay")

    monkeypatch.setattr(process, "render_overlay", broken)
    sent = list(pub.on_results([result().to_parts()]))
    assert [b[0] for b in sent] == [b"mask/cam0/", b"stream/cam0/"] and decoded(sent[0]).seq == 1
    assert pub.stats.counters["overlays_failed"] == 1 and "MemoryError" in pub.stats.errors[-1]
    monkeypatch.undo()
    assert [decoded(b).seq for b in pub.on_results([result().to_parts()])] == [2, 2, 2, 2]


def test_a_result_whose_masks_fail_to_encode_is_a_counted_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    pub = make_publisher()

    class Unencodable(MaskBroadcast):
        def to_parts(self) -> list[Any]:
            raise ValueError("cannot encode")

    monkeypatch.setattr(process, "MaskBroadcast", Unencodable)
    assert list(pub.on_results([result().to_parts()])) == []
    assert pub.stats.counters["results_rejected"] == 1 and "ValueError" in pub.stats.errors[-1]
    assert pub.cache == {} and pub.seq == {}  # nothing half-published; the next result is seq 1
    monkeypatch.undo()
    assert decoded(next(pub.on_results([result().to_parts()]))).seq == 1


@pytest.mark.parametrize("parts", [
    [b"\x01mask/", b"more"], [b"hello", b"world"], [b""], [b"\x02mask/cam0/"], [b"\xff" * 300], [b"", b"", b""],
    [b"\x00mask/cam0/"],
])
def test_upstream_messages_that_are_not_subscriptions_are_ignored(parts: list[bytes]) -> None:
    pub = make_publisher()
    list(pub.on_results([result().to_parts()]))
    assert pub.on_upstream([parts]) == []
    counters = pub.stats.counters
    assert counters["upstream_ignored"] + counters["unsubscriptions"] == 1 and counters["replays"] == 0


def test_a_subscription_replays_the_matching_cache() -> None:
    pub = make_publisher()
    list(pub.on_results([result("cam0").to_parts(), result("cam10").to_parts()]))
    replay = pub.on_upstream([[b"\x01mask/cam0/"]])
    assert [b[0] for b in replay] == [b"mask/cam0/"]
    assert pub.on_upstream([[b"\x01nothing/"]]) == []  # no cached topic under it
    assert sorted(b[0] for b in pub.on_upstream([[b"\x01"]])) == sorted(pub.cache)  # "" matches every topic


def test_re_subscribing_in_a_loop_gets_one_replay_per_interval() -> None:
    clock = Clock()
    pub = make_publisher(clock, replay_min_interval_ms=500)
    list(pub.on_results([result().to_parts()]))
    replays = 0
    for step in range(200):  # 20 re-subscriptions a second for 10 s
        clock.now = 100.0 + step * 0.05
        replays += len(pub.on_upstream([[b"\x01mask/cam0/"]])) + len(pub.due_replays())
    assert 19 <= replays <= 10 / 0.5 + 1
    counters = pub.stats.counters
    assert counters["subscriptions"] == 200 and counters["replays_suppressed"] >= 200 - replays


def test_a_held_back_subscription_is_replayed_when_the_interval_is_over() -> None:
    clock = Clock()
    pub = make_publisher(clock, replay_min_interval_ms=500)
    list(pub.on_results([result().to_parts()]))
    assert len(pub.on_upstream([[b"\x01mask/cam0/"]])) == 1
    clock.now += 0.1
    assert pub.on_upstream([[b"\x01mask/cam0/"]]) == [] and pub.due_replays() == []  # a display joins too soon
    clock.now += 0.4
    assert [b[0] for b in pub.due_replays()] == [b"mask/cam0/"]  # ...and gets the state one interval later
    assert pub.due_replays() == []


def test_replays_of_many_prefixes_share_a_global_cap() -> None:
    clock = Clock()
    pub = make_publisher(clock, replay_min_interval_ms=0, replay_max_per_s=3)
    list(pub.on_results([result().to_parts()]))
    prefixes = [b"\x01" + b"mask/cam0/"[:n] for n in range(11)]  # 11 prefixes that all match the cache
    pub.on_upstream([[p] for p in prefixes])
    assert pub.due_replays() == []
    assert pub.stats.counters["replays"] == 3 and pub.stats.counters["replays_suppressed"] == 8
    clock.now += 1.0
    pub.due_replays()
    assert pub.stats.counters["replays"] == 6


@hsettings(max_examples=60, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from([b"a", b"b", b"ab"]), st.floats(0, 0.4), st.booleans()),
                       min_size=1, max_size=60),
       interval=st.sampled_from([0.0, 0.1, 0.5]), cap=st.integers(1, 5))
def test_replay_limits_hold_and_no_subscription_is_lost(events: list[tuple[bytes, float, bool]], interval: float,
                                                        cap: int) -> None:
    limiter = ReplayLimiter(interval, cap)
    now, done = 0.0, []
    asked: dict[bytes, float] = {}
    for prefix, wait, subscribe in events:
        now += wait
        if subscribe:
            asked[prefix] = now  # the latest subscription of each prefix must get a replay at or after it
            if limiter.request(prefix, now):
                done.append((prefix, now))
        done.extend((p, now) for p in limiter.due(now))
    for _ in range(200):  # no more subscriptions: everything pending goes out
        now += 0.1
        done.extend((p, now) for p in limiter.due(now))
    assert limiter.pending == 0
    times = [t for _, t in done]
    assert all(sum(1 for u in times if t <= u < t + 1.0) <= cap for t in times)
    for prefix in asked:
        mine = [t for p, t in done if p == prefix]
        assert all(b - a >= interval - 1e-9 for a, b in zip(mine, mine[1:], strict=False))
        assert mine and mine[-1] >= asked[prefix]


# -- fuzz: mutated result messages never stop the publisher, and it never sends a malformed broadcast ----------

WRONG = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                  st.text(max_size=20), st.binary(max_size=20), st.lists(st.integers(-5, 300), max_size=4),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
HEADER_FIELDS = ["v", "type", "stream", "frame_id", "capture_ns", "hops", "engine", "notices", "stats", "objects",
                 "arrays"]
OBJECT_FIELDS = ["id", "label", "colour", "score", "area", "bbox"]


@st.composite
def mutated_results(draw: st.DrawFn) -> list[bytes]:
    parts = [bytes(p) for p in result(objects=draw(st.integers(0, 2))).to_parts()]
    header = msgpack.unpackb(parts[0])
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["field", "object", "drop", "flip", "parts"]))
        if how == "field":
            header[draw(st.sampled_from(HEADER_FIELDS))] = draw(WRONG)
        elif how == "object" and isinstance(header.get("objects"), list) and header["objects"]:
            obj = header["objects"][0]
            if isinstance(obj, dict):
                obj[draw(st.sampled_from(OBJECT_FIELDS))] = draw(WRONG)
        elif how == "drop":
            header.pop(draw(st.sampled_from(HEADER_FIELDS)), None)
        elif how == "parts" and len(parts) > 1:
            index = draw(st.integers(1, len(parts) - 1))
            parts[index] = draw(st.sampled_from([b"", parts[index] * 2, parts[index][:-1]]))
    try:
        parts[0] = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        pass  # a value msgpack cannot hold: keep the original header, the byte flips still apply
    if draw(st.booleans()):
        index = draw(st.integers(0, len(parts) - 1))
        data = bytearray(parts[index])
        for _ in range(draw(st.integers(1, 4))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        parts[index] = bytes(data)
    return parts


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(mutated_results(), min_size=1, max_size=3))
def test_mutated_results_are_rejected_or_published_never_fatal(batch: list[list[bytes]]) -> None:
    pub = make_publisher()
    out = list(pub.on_results(batch))
    counters = pub.stats.counters
    handled = counters["results_rejected"] + counters["masks_published"] + counters["results_superseded"]
    assert handled == len(batch)
    for broadcast in out:
        message = decoded(broadcast)  # whatever went out is a well-formed broadcast
        assert broadcast[0] == f"{message.TYPE.removesuffix('s')}/{message.stream_id}/".encode()
