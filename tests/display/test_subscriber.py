"""The display client: the replay / instance rule, gaps, topic checks, and malformed messages as counted
rejections; in-process, then over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.display.subscriber import Subscriber
from samsa_stream.errors import CommandError
from samsa_stream.node import wait_until
from samsa_stream.protocol import MaskBroadcast, ObjectMask, OverlayImage, encode_image
from samsa_stream.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(overrides={"endpoints": {"broadcast": f"ipc://{tmp_path}/broadcast"}})


@pytest.fixture
def display(settings: Settings) -> Iterator[Subscriber]:
    with Subscriber(settings, ["cam0"]) as sub:
        yield sub


def mask_message(seq: int, publisher: str = "a" * 16, stream: str = "cam0", topic_stream: str | None = None,
                 frame_id: int | None = None) -> list[Any]:
    mask = np.zeros((12, 16), bool)
    mask[2:6, 3:9] = True
    msg = MaskBroadcast(stream, seq if frame_id is None else frame_id, 1, (12, 16),
                        [ObjectMask(1, "liver", (255, 0, 0), mask, 0.9)], "spectral", seq=seq, publisher=publisher)
    return [f"mask/{topic_stream or stream}/".encode(), *[bytes(p) for p in msg.to_parts()]]


def overlay_message(seq: int, data: bytes | None = None, publisher: str = "a" * 16) -> list[Any]:
    image = np.full((12, 16, 3), 70, np.uint8)
    msg = OverlayImage("cam0", seq, 1, "png", encode_image(image, "png") if data is None else data, seq=seq,
                       publisher=publisher)
    return [b"overlay/cam0/", *[bytes(p) for p in msg.to_parts()]]


def test_new_messages_replays_and_gaps(display: Subscriber) -> None:
    first = display.handle(mask_message(5))  # a display that joins late takes the cached state as news
    assert first is not None and first.seq == 5 and first.missed == 0 and first.masks is not None
    assert display.handle(mask_message(5)) is None  # a replay meant for a later display
    assert display.handle(mask_message(3)) is None
    gap = display.handle(mask_message(9))
    assert gap is not None and gap.missed == 3
    counters = display.stats.counters
    assert counters["masks_received"] == 2 and counters["replays_ignored"] == 2 and counters["masks_missed"] == 3
    latest = display.latest("cam0")
    assert latest is not None and latest.seq == 9


def test_a_new_publisher_run_starts_the_count_again(display: Subscriber) -> None:
    assert display.handle(mask_message(40, publisher="a" * 16)) is not None
    restarted = display.handle(mask_message(1, publisher="b" * 16))
    assert restarted is not None and restarted.missed == 0  # not a replay, though its seq is lower
    assert display.handle(mask_message(2, publisher="b" * 16)) is not None
    assert display.handle(mask_message(1, publisher="b" * 16)) is None
    assert display.stats.counters["publisher_changes"] == 1


def test_overlays_are_decoded_and_tracked_apart_from_masks(display: Subscriber) -> None:
    update = display.handle(overlay_message(1))
    assert update is not None and update.kind == "overlay" and update.image is not None
    assert update.image.shape == (12, 16, 3) and (update.image == 70).all()
    assert display.handle(mask_message(1)) is not None  # the same seq on the mask topic is news
    assert display.handle(overlay_message(4)).missed == 0  # overlays come every N-th result: no gap counted
    assert display.handle(overlay_message(5, data=b"\x89PNG not really")) is None
    assert display.stats.counters["messages_rejected"] == 1
    assert display.handle(overlay_message(5)) is not None  # the rejected one did not advance the tracking


@pytest.mark.parametrize("parts, reason", [
    (mask_message(1, stream="cam0x", topic_stream="cam0"), "came on the topic of"),  # stream field != topic
    (mask_message(1, stream="cam1"), "not one this display subscribed to"),
    ([b"mask/cam0/x/", *mask_message(1)[1:]], "'cam0/x' is not a stream id"),  # prefix-matches 'mask/cam0/'
    ([b"mask/cam0", *mask_message(1)[1:]], "is not <mask|overlay|image|stream|prompt>/<stream id>/"),
    ([b"frame/cam0/", *mask_message(1)[1:]], "is not <mask|overlay|image|stream|prompt>/<stream id>/"),
    ([b"mask/cam0/"], "part(s)"),
    ([b"mask/cam0/", b"\xc1 garbage"], "msgpack"),
    ([b"overlay/cam0/", *mask_message(1)[1:]], "message type"),
    ([b"mask/cam0/", *mask_message(1)[1:], b"extra"], "truncated or padded"),
    ([b"\xff" * 5000, b""], "is not <mask|overlay|image|stream|prompt>"),
])
def test_malformed_or_misdirected_messages_are_counted_rejections(display: Subscriber, parts: list[Any],
                                                                  reason: str) -> None:
    assert display.handle(parts) is None
    assert display.stats.counters["messages_rejected"] == 1 and reason in display.stats.errors[-1]
    assert display.latest("cam0") is None


def test_kinds_and_streams_are_checked(settings: Settings) -> None:
    with Subscriber(settings, ["cam0", "cam1"], kinds=("mask",)) as sub:
        assert sub.prefixes() == [b"mask/cam0/", b"mask/cam1/"]
        assert sub.handle(mask_message(1, stream="cam1")) is not None
        assert sub.handle(overlay_message(1)) is None  # overlays were not asked for
    with Subscriber(settings, None, kinds=("overlay",)) as every:
        assert every.prefixes() == [b"overlay/"]
    for streams, kinds in ((["cam0/x"], ("mask",)), ([], ("mask",)), (["cam0"], ()), (["cam0"], ("frames",))):
        with pytest.raises(CommandError):
            Subscriber(settings, streams, kinds=kinds)


WRONG = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                  st.text(max_size=12), st.binary(max_size=12), st.lists(st.integers(-3, 3), max_size=3))


@st.composite
def mutated_broadcasts(draw: st.DrawFn) -> list[bytes]:
    parts = draw(st.sampled_from([mask_message(2), overlay_message(2)]))
    header = msgpack.unpackb(parts[1])
    for _ in range(draw(st.integers(0, 3))):
        header[draw(st.sampled_from(["v", "type", "stream", "seq", "publisher", "size", "objects", "notices",
                                     "frame_id", "capture_ns", "hops", "encoding", "arrays"]))] = draw(WRONG)
    try:
        parts[1] = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        pass  # a value msgpack cannot hold: keep the header; the byte flips below still apply
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, len(parts) - 1))
        data = bytearray(parts[index])
        if data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        parts[index] = bytes(data)
    return parts


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(batch=st.lists(mutated_broadcasts(), min_size=1, max_size=4))
def test_mutated_broadcasts_never_raise(display: Subscriber, batch: list[list[bytes]]) -> None:
    outcomes = ("masks_received", "overlays_received", "replays_ignored", "messages_rejected")
    before = sum(display.stats.counters[k] for k in outcomes)
    for parts in batch:
        update = display.handle(parts)
        if update is not None:
            assert update.stream_id == "cam0" and (update.masks is not None or update.image is not None)
    # every message ends one way or another, counted once
    assert sum(display.stats.counters[k] for k in outcomes) - before == len(batch)


def test_over_a_socket_only_subscribed_topics_arrive(settings: Settings) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(settings.endpoints.broadcast)
    try:
        with Subscriber(settings, ["cam0"]) as display:
            assert wait_until(lambda: pub.poll(100) and pub.recv().startswith(b"\x01"), timeout=10)
            pub.send_multipart(mask_message(1, stream="cam10"))  # another stream: not subscribed, never arrives
            pub.send_multipart([b"mask/cam0/x/", *mask_message(1)[1:]])  # prefix-matches: must be rejected
            pub.send_multipart(mask_message(1))
            update = display.receive(5000)
            assert update is not None and update.stream_id == "cam0" and update.seq == 1
            assert display.stats.counters["messages_rejected"] == 1
            assert display.receive(50) is None
            pub.send_multipart(mask_message(1))  # a replay
            pub.send_multipart(mask_message(2))
            assert wait_until(lambda: display.drain() != [] or display.latest("cam0").seq == 2, timeout=5)
            assert display.stats.counters["replays_ignored"] == 1
    finally:
        pub.close()
        ctx.term()
