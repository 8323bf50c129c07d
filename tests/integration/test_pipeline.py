"""The node's real processes on loopback: masks arrive, follow the moving object, late displays
get the current state, bad input is counted and survived, and any process can restart."""

from __future__ import annotations

import msgpack
import numpy as np
import zmq

from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import PROTOCOL_VERSION, PromptReply, topic
from tests.conftest import iou, phantom_frames
from tests.integration.conftest import (
    Display,
    console_for,
    latest_frame,
    phantom,
    raw_socket,
    settle,
    start_all,
    status,
)


def click_object(node: LocalNode, console, object_id: int = 1) -> int:
    frame_id = latest_frame(console)
    x, y = phantom(node).centre(object_id - 1, frame_id)
    reply = console.click(object_id, x, y, frame_id=frame_id)
    assert reply.ok, reply.error
    return frame_id


def test_masks_follow_the_moving_object(node: LocalNode) -> None:
    start_all(node)
    display = Display(node)
    console = console_for(node)
    try:
        clicked = click_object(node, console)
        cam = phantom(node)
        masks = [m for m in display.masks(40, timeout_s=15) if m.objects and m.frame_id > clicked]
        assert len(masks) >= 15, f"only {len(masks)} mask messages with objects"
        scores = [iou(m.objects[0].mask, cam.labels(m.frame_id) == 1) for m in masks]
        travelled = max(np.abs(np.subtract(cam.centre(0, m.frame_id), cam.centre(0, clicked))).max() for m in masks)
        assert travelled > 5, "the object must move during the test"
        assert min(scores) >= 0.8, scores
        hops = [h[0] for h in masks[-1].hops]
        assert hops == ["ingest_out", "worker_in", "worker_out", "publisher_in", "publisher_out"]
        times = [h[1] for h in masks[-1].hops]
        assert masks[-1].capture_ns <= times[0] and times == sorted(times)
    finally:
        console.close()
        display.close()


def test_late_display_gets_the_last_state_at_once(node: LocalNode) -> None:
    start_all(node)
    console = console_for(node)
    first = Display(node)
    try:
        click_object(node, console)
        assert wait_until(lambda: (m := first.next_mask(1.0)) is not None and m.objects, timeout=10)
        shown = settle(node, console, first.subscriber)  # no new frames: a new display's state comes from the cache
        late = Display(node)
        try:
            msg = late.next_mask(timeout_s=5.0)
            assert msg is not None, "late display got nothing"
            assert (msg.frame_id, msg.seq) == (shown.frame_id, shown.seq) and [o.object_id for o in msg.objects] == [1]
            assert msg.objects[0].mask.any()
            # The first display gets that replay too, and does not take it for news.
            news: list = []
            assert wait_until(lambda: (news.append(first.next_mask(0.1)), first.counters["replays_ignored"] >= 1)[1],
                              timeout=10)
            assert news.count(None) == len(news), "a replay was taken for a new message"
        finally:
            late.close()
    finally:
        console.close()
        first.close()


def test_bad_frames_and_prompts_are_counted_and_survived(node: LocalNode) -> None:
    start_all(node, "publisher", "worker")  # the test plays the camera
    ctx, cam_pub = raw_socket(zmq.PUB, node.settings.endpoints.frames, bind=True)
    console = console_for(node)
    display = Display(node)
    try:
        cam, frames = phantom_frames(bands=24, height=60, width=80, count=12)
        t = topic("frame", "cam0")
        good = frames[0].to_parts()
        header = msgpack.unpackb(bytes(good[0]))
        bad_messages = [
            [t, b"\xc1 not msgpack"],  # bad msgpack
            [t, *[bytes(p) for p in good[:-1]]],  # truncated multipart
            [t, msgpack.packb({**header, "v": PROTOCOL_VERSION + 7}), *[bytes(p) for p in good[1:]]],  # wrong version
            [t, bytes(good[0]), bytes(good[1])[:-8], *[bytes(p) for p in good[2:]]],  # short buffer
        ]
        nan_frame = frames[1]
        nan_frame.cube = nan_frame.cube.copy()
        nan_frame.cube[0, 0, 0] = np.nan
        bad_messages.append([t, *nan_frame.to_parts()])

        def send(parts: list) -> None:
            cam_pub.send_multipart(parts, copy=False)

        assert wait_until(lambda: (send([t, *frames[0].to_parts()]), latest_frame(console) is not None)[1], 10)
        for n, parts in enumerate(bad_messages, start=1):
            send(parts)  # one at a time, each counted before the next: none can be dropped at the high-water mark
            assert wait_until(lambda n=n: status(console)["counters"].get("frames_rejected", 0) >= n, timeout=20)
        click_object(node, console)  # asserts the click was applied
        for f in frames[2:]:
            send([t, *f.to_parts()])
            assert wait_until(lambda f=f: status(console)["streams"]["cam0"]["last_frame_id"] == f.frame_id, 20)
        got: list = []
        assert wait_until(lambda: (got.extend(m for m in display.masks(1, timeout_s=0.5) if m.objects),
                                   bool(got) and got[-1].frame_id == frames[-1].frame_id)[1], timeout=30)
        assert iou(got[-1].objects[0].mask, cam.labels(frames[-1].frame_id) == 1) >= 0.8
        st = status(console)
        assert st["counters"]["frames_rejected"] == len(bad_messages), st["counters"]
        errors = " | ".join(st["recent_errors"])
        for words in ("not valid msgpack", "truncated", "version", "bytes, expected", "NaN/inf"):
            assert words in errors, (words, errors)

        # Malformed prompts on the real socket get an error reply; the worker keeps serving.
        dealer = console.sock
        for parts in ([b"garbage"], [msgpack.packb({"v": 1, "type": "prompt", "stream": "cam0", "op": "fly"})],
                      [msgpack.packb({"v": 1, "type": "prompt", "stream": "cam0", "op": "click", "object_id": 1})]):
            dealer.send_multipart(parts)
            assert dealer.poll(3000)
            reply = PromptReply.from_parts(dealer.recv_multipart())
            assert not reply.ok and "malformed prompt request" in reply.error
        assert not console.click(1, 10_000, 5).ok
        assert not console.request("remove", object_id=99).ok
        assert console.request("status").ok
    finally:
        console.close()
        display.close()
        cam_pub.close()
        ctx.term()


def test_each_process_can_restart_without_the_others(node: LocalNode, tmp_path) -> None:
    node.env["SAMSA_WORKER__STATE_FILE"] = str(tmp_path / "prompts.json")
    start_all(node)
    display = Display(node)
    console = console_for(node)
    cam = phantom(node)

    def tracking(after: int, n: int = 5) -> float:
        msgs = [m for m in display.masks(30, timeout_s=15) if m.objects and m.frame_id > after][:n]
        assert len(msgs) == n, f"only {len(msgs)} masks after frame {after}"
        return min(iou(m.objects[0].mask, cam.labels(m.frame_id) == 1) for m in msgs)

    try:
        clicked = click_object(node, console)
        assert tracking(clicked) >= 0.8
        for name in ("worker", "publisher", "ingest"):
            node.kill(name)  # a crash: no clean shutdown (kill returns once the process is gone)
            node.start(name)
            if name == "worker":
                console.close()
                console = console_for(node)
                assert status(console)["streams"]["cam0"]["objects"][0]["id"] == 1, "prompts lost in the restart"
            # A restarted camera counts from 0 again; every frame id's ground truth is known, so any mask counts.
            frame = -1 if name == "ingest" else latest_frame(console)
            assert tracking(frame) >= 0.8, f"no tracking after restarting {name}"
    finally:
        console.close()
        display.close()


def test_a_stalled_display_does_not_slow_the_others(node: LocalNode) -> None:
    start_all(node)
    console = console_for(node)
    ctx, stalled = raw_socket(zmq.SUB, node.settings.endpoints.broadcast, bind=False)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")  # masks and overlays, never read
    display = Display(node)
    try:
        click_object(node, console)
        # While this display reads 30 messages, the stalled one's buffers fill up.
        assert len(display.masks(30, timeout_s=30)) == 30
        missed_before = display.counters["masks_missed"]
        got = display.masks(40, timeout_s=30)
        assert len(got) == 40, f"the healthy display got only {len(got)} masks"
        missed = display.counters["masks_missed"] - missed_before  # from the publisher's seq numbers
        assert missed <= 2, (missed, [m.seq for m in got])
    finally:
        console.close()
        display.close()
        stalled.close()
        ctx.term()
