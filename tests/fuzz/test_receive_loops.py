"""The worker's and the publisher's receive loops, as real processes on ipc:// sockets, take 10,000 random
messages (random bytes, truncated and byte-flipped valid messages, messages of the wrong type, forged
shared-memory descriptors) on the worker's frame SUB and prompt ROUTER and on the publisher's results
PULL, count them as rejections, and still work: the worker answers every prompt request and a status
request, and a valid frame still becomes a mask at a display."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import ClickPrompt, CubeFrame, PromptEvent, SegmentationResult, topic
from samsa_stream.protocol.mutations import Mangler
from tests.conftest import phantom_frames
from tests.integration.conftest import Display, console_for, raw_socket, status

MESSAGES = 10_000
BATCH = 50  # prompt requests in flight at once: well under the ROUTER's high-water mark, so none is dropped
# Queues deep enough that every malformed frame reaches the worker's decoder instead of being dropped by ZeroMQ.
SETTINGS = {"log": {"level": "WARNING", "stats_interval_s": 1.0}, "sockets": {"frames_hwm": 20_000}}
CAM, FRAMES = phantom_frames(bands=24, height=60, width=80, count=4)


def _parts(message: list[Any]) -> list[bytes]:
    return [bytes(p) for p in message]


OTHER_TYPES = [_parts(ClickPrompt(stream_id="cam0", object_id=1, x=1.0, y=1.0).to_parts()),
               _parts(PromptEvent("cam0", {"op": "reset"}, True).to_parts()),
               _parts(SegmentationResult("cam0", 1, 1, FRAMES[0].rgb, [], "spectral").to_parts()),
               _parts(FRAMES[0].to_parts())]


@pytest.fixture
def node(tmp_path) -> Iterator[LocalNode]:
    with LocalNode(SETTINGS, transport="ipc", run_dir=tmp_path) as n:
        yield n
        for name in n.procs:
            print(f"--- {name} log ---\n{n.log_text(name)[-3000:]}")


def _frame(frame_id: int) -> list[bytes]:
    frame: CubeFrame = FRAMES[frame_id % len(FRAMES)]
    frame.frame_id = frame_id
    return [topic("frame", "cam0"), *_parts(frame.to_parts())]


def test_ten_thousand_random_messages_leave_both_loops_working(node: LocalNode) -> None:
    endpoints = node.settings.endpoints
    # The test is the camera: it binds the frame endpoint as ingest would.
    frames_ctx, frames = raw_socket(zmq.PUB, endpoints.frames, bind=True)
    frames.setsockopt(zmq.SNDHWM, 20_000)
    node.start("publisher")
    node.start("worker")
    console = console_for(node)
    results_ctx, results = raw_socket(zmq.PUSH, endpoints.results, bind=False)
    prompts_ctx, prompts = raw_socket(zmq.DEALER, endpoints.prompts, bind=False)
    results.setsockopt(zmq.SNDTIMEO, 10_000)  # a publisher that stopped reading fails the test, never hangs it
    display = Display(node)
    garbage = Mangler(seed=20260, others=OTHER_TYPES)
    next_id = [0]

    def frame_arrived() -> bool:
        frames.send_multipart(_frame(next_id[0]))
        next_id[0] += 1
        return status(console).get("streams", {}).get("cam0", {}).get("last_frame_id") is not None

    try:
        assert wait_until(frame_arrived, timeout=30, interval=0.1), "the worker never subscribed to the frames"
        valid_frame = _frame(10)[1:]
        valid_prompt = _parts(ClickPrompt(stream_id="cam0", request_id=5, object_id=1, x=3.0, y=4.0).to_parts())
        valid_result = _parts(SegmentationResult("cam0", 3, 3, FRAMES[0].rgb, [], "spectral").to_parts())
        sent = {"frames": 0, "prompts": 0, "results": 0}
        replies = framed = 0
        while sum(sent.values()) < MESSAGES:
            for _ in range(BATCH):
                if garbage.rng.random() < 0.8:
                    frames.send_multipart([topic("frame", "cam0"), *garbage(valid_frame)])
                    framed += 1
                else:  # without the topic: the worker's subscription filters it out
                    frames.send_multipart(garbage(valid_frame))
                results.send_multipart(garbage(valid_result))
                prompts.send_multipart(garbage(valid_prompt))
            sent = {k: v + BATCH for k, v in sent.items()}
            for _ in range(BATCH):  # every request gets one reply, whatever it was
                assert prompts.poll(10_000), f"no reply to a malformed prompt after {replies} replies"
                prompts.recv_multipart()
                replies += 1
        assert replies == sent["prompts"]

        def received() -> dict[str, Any]:
            return status(console)["counters"]  # the worker still answers

        assert wait_until(lambda: received().get("frames_received", 0) >= framed, timeout=20), received()
        counters = received()
        assert counters.get("prompts_rejected", 0) >= 0.9 * sent["prompts"], counters
        assert counters.get("frames_rejected", 0) >= 0.5 * framed, counters
        assert counters.get("frame_decoder_faults", 0) == 0 and counters.get("prompts_failed", 0) == 0, counters

        # A valid frame, a click on it, and the mask reaches a display through the publisher.
        assert wait_until(frame_arrived, timeout=10, interval=0.1)
        assert console.request("reset").ok  # mutated clicks that still decoded made objects of their own
        frame_id = status(console)["streams"]["cam0"]["last_frame_id"]
        reply = console.click(1, *CAM.centre(0, frame_id % len(FRAMES)), frame_id=frame_id)
        assert reply.ok, reply.error

        def mask_shown() -> bool:
            frames.send_multipart(_frame(next_id[0]))
            next_id[0] += 1
            msg = display.next_mask(timeout_s=0.2)
            return msg is not None and [o.object_id for o in msg.objects] == [1]

        assert wait_until(mask_shown, timeout=30, interval=0.05), "no mask after the flood"
    finally:
        display.close()
        console.close()
        for sock, ctx in ((frames, frames_ctx), (results, results_ctx), (prompts, prompts_ctx)):
            sock.close(0)
            ctx.term()
    assert node.running("worker") and node.running("publisher")
    assert node.stop("publisher") == 0
    published = node.stats("publisher")["counters"]
    assert published.get("results_rejected", 0) >= 0.5 * sent["results"], published
    print({"sent": sent, "framed": framed,
           "worker": {k: v for k, v in counters.items() if "reject" in k or "frames" in k},
           "publisher": {k: v for k, v in published.items() if "reject" in k or "results" in k}})
