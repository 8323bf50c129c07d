"""The broadcast link with real processes: displays follow a restarted publisher at once, odd upstream
messages never stop the publisher, and a peer re-subscribing in a loop does not flood the other displays."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from samsa_stream.display.subscriber import Subscriber, Update
from samsa_stream.node import LocalNode, wait_until
from tests.integration.conftest import FAST, console_for, raw_socket, settle, start_all
from tests.integration.test_pipeline import click_object


@pytest.fixture
def node(tmp_path) -> Iterator[LocalNode]:
    # tcp: the link displays on other hosts use, and where a stray peer would come from
    with LocalNode(FAST, transport="tcp", run_dir=tmp_path) as n:
        yield n
        for name in n.procs:
            print(f"--- {name} log ---\n{n.log_text(name)[-3000:]}")


def next_update(display: Subscriber, accept, timeout_s: float) -> Update | None:
    """The first update ``accept`` takes within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        update = display.receive(200)
        if update is not None and accept(update):
            return update
    return None


def test_a_restarted_publisher_is_followed_at_once(node: LocalNode) -> None:
    start_all(node)
    display = Subscriber(node.settings, ["cam0"], kinds=("mask",))
    try:
        before = next_update(display, lambda u: u.seq >= 60, timeout_s=30)
        assert before is not None, "the first publisher never numbered 60 results"
        node.kill("publisher")
        node.start("publisher")
        after = next_update(display, lambda u: u.publisher != before.publisher, timeout_s=20)
        assert after is not None, "nothing from the restarted publisher"
        # Numbered from 1 again, yet shown at once: not taken for a replay of the first run's messages.
        assert after.seq < before.seq and after.frame_id > before.frame_id
        more = [display.receive(5000) for _ in range(3)]
        assert all(u is not None and u.publisher == after.publisher for u in more)
        assert display.stats.counters["publisher_changes"] == 1
    finally:
        display.close()


def test_odd_upstream_messages_do_not_stop_the_publisher(node: LocalNode) -> None:
    start_all(node)
    display = Subscriber(node.settings, ["cam0"], kinds=("mask",))
    ctx, peer = raw_socket(zmq.XSUB, node.settings.endpoints.broadcast, bind=False)
    odd = [[b"hello", b"world"], [b""], [b"\x02mask/"], [b"", b"", b""], [b"\x01mask/cam0/", b"tail"],
           [bytes(range(255, -1, -1)) * 400]]
    try:
        first = display.receive(20_000)
        assert first is not None, "no masks before the test"
        peer.send(b"\x01mask/cam0/")  # XSUB drops what it sends before it is connected: wait until it is
        assert wait_until(lambda: peer.poll(100) != 0, timeout=20), "the peer never got connected"
        for parts in odd:
            peer.send_multipart(parts)
        peer.send(b"\x01overlay/")  # answered by a replay once the publisher has read everything before it
        got_replay = wait_until(lambda: peer.poll(100) and peer.recv_multipart()[0].startswith(b"overlay/"), 20)
        assert got_replay, "the publisher never answered the subscription after the odd messages"
        later = next_update(display, lambda u: u.frame_id > first.frame_id + 5, timeout_s=20)
        assert later is not None and node.running("publisher"), "the publisher stopped serving the display"
        assert node.stop("publisher") == 0
        counters = node.stats("publisher")["counters"]
        # [b"\x01mask/cam0/", b"tail"] is a subscription, then "tail"; every other message is ignored once
        assert counters["upstream_ignored"] >= len(odd) and counters["subscriptions"] >= 2, counters
        assert "Traceback" not in node.log_text("publisher")
    finally:
        display.close()
        peer.close()
        ctx.term()


def test_a_peer_re_subscribing_in_a_loop_does_not_flood_the_others(node: LocalNode) -> None:
    start_all(node)
    console = console_for(node)
    healthy = Subscriber(node.settings, ["cam0"], kinds=("mask",))
    ctx, peer = raw_socket(zmq.SUB, node.settings.endpoints.broadcast, bind=False)
    late: Subscriber | None = None
    try:
        click_object(node, console)
        shown = settle(node, console, healthy)
        before = dict(healthy.stats.counters)
        interval_s = node.settings.publisher.replay_min_interval_ms / 1000
        late_update: Update | None = None
        subscribed = 0
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            peer.setsockopt(zmq.SUBSCRIBE, b"mask/cam0/")
            subscribed += 1
            healthy.receive(1)
            if late is None and time.monotonic() - start > 1.0:
                late = Subscriber(node.settings, ["cam0"], kinds=("mask",))  # a display joins during the storm
            if late is not None and late_update is None:
                late_update = late.receive(0)
        if late_update is None and late is not None:
            late_update = late.receive(5000)
        healthy.drain()
        window_s = time.monotonic() - start
        counters = healthy.stats.counters
        replays = counters["replays_ignored"] - before.get("replays_ignored", 0)
        assert counters["masks_received"] == before["masks_received"], "a replay was taken for a new message"
        # Replays of one prefix are at least an interval apart, whatever the load: that bounds what the
        # healthy display receives, where each re-subscription used to bring it one more message.
        assert replays <= window_s / interval_s + 2, (replays, window_s, subscribed)
        assert late_update is not None, "the display that joined during the storm got no state"
        assert late_update.frame_id == shown.frame_id and late_update.masks is not None
        assert [o.object_id for o in late_update.masks.objects] == [1]
        assert node.stop("publisher") == 0
        pub = node.stats("publisher")["counters"]
        assert pub["subscriptions"] >= min(100, subscribed), pub  # the storm reached the publisher
        assert pub["replays_suppressed"] >= pub["subscriptions"] // 2, pub
    finally:
        console.close()
        healthy.close()
        if late is not None:
            late.close()
        peer.close()
        ctx.term()


def test_a_stopped_camera_makes_the_stream_stale_everywhere_and_a_late_display_learns_it_at_once(
        node: LocalNode) -> None:
    """The camera stops: a display already watching sees the stream go stale (the publisher's stream
    message, and by its own clock); a display that joins then gets the stale state in its first
    messages, with the image size, wavelengths and legend; the camera coming back makes it live."""
    start_all(node)
    console = console_for(node)
    kinds = ("mask", "overlay", "stream")
    watching = Subscriber(node.settings, ["cam0"], kinds=kinds)
    try:
        click_object(node, console)
        assert next_update(watching, lambda u: u.kind == "stream" and u.info.objects, 30) is not None
        node.stop("ingest")
        stale = next_update(watching, lambda u: u.kind == "stream" and u.info.stale, 30)
        assert stale is not None and stale.info.age_ms > node.settings.display.stale_after_s * 1000
        assert watching.stale("cam0")
        marked = next_update(watching, lambda u: u.kind == "overlay" and u.overlay.stale, 10)
        assert marked is not None and marked.image is not None
        with Subscriber(node.settings, ["cam0"], kinds=kinds) as late:
            info = next_update(late, lambda u: u.kind == "stream", 10)
            assert info is not None and info.info.stale
            assert info.info.size == (60, 80) and len(info.info.wavelengths_nm) == 24
            assert [o["id"] for o in info.info.objects] == [1] and info.info.displays >= 1
            assert wait_until(lambda: (late.drain(), late.latest("cam0") is not None)[1], timeout=10)
            assert late.stale("cam0")  # the replayed mask is old news: stale from its first moment
        node.start("ingest")
        assert wait_until(lambda: (watching.drain(), not watching.stale("cam0"))[1], timeout=30)
    finally:
        console.close()
        watching.close()
