"""A real worker process under hostile or broken input: queries for streams it never saw while it
segments two streams, stream ids that are not ones, frame-id jumps to the end of int64, state files
of the wrong shape, a state file it cannot write. It keeps serving and says what happened."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from samsa_stream.display.console import PromptConsole
from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import INT64_MAX, PROTOCOL_VERSION, PromptReply, StatePrompt, topic
from tests.conftest import phantom_frames
from tests.integration.conftest import FAST, latest_frame, phantom, raw_socket, status

LATENCIES = {"frame_link", "wait", "segment", "capture_to_worker_out"}


class Camera:
    """A test camera on the frame link: sends phantom frames of the given streams until stopped."""

    def __init__(self, node: LocalNode, streams: tuple[str, ...], fps: float = 50.0) -> None:
        self.endpoint, self.streams, self.period = node.settings.endpoints.frames, streams, 1.0 / fps
        self.cam, self.frames = phantom_frames(bands=24, height=60, width=80, count=20)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ctx, pub = raw_socket(zmq.PUB, self.endpoint, bind=True)
        try:
            k = 0
            while not self.stop.is_set():
                for sid in self.streams:
                    frame = self.frames[k % len(self.frames)]
                    frame.stream_id, frame.frame_id, frame.hops = sid, k, [["ingest_out", time.time_ns()]]
                    pub.send_multipart([topic("frame", sid), *frame.to_parts()], copy=False)
                k += 1
                time.sleep(self.period)
        finally:
            pub.close(0)
            ctx.term()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def answering_console(node: LocalNode) -> PromptConsole:
    """A console once the worker answers; closed again when it does not (a leaked one hangs the test run)."""
    console = PromptConsole(node.settings, "cam0")
    if not wait_until(console.answers, timeout=20, interval=0.2):
        console.close()
        pytest.fail(f"the worker does not answer; its log:\n{node.log_text('worker')[-3000:]}")
    return console


def pipelined(console: PromptConsole, requests: list[list[bytes]], batch: int = 40,
              timeout_s: float = 30.0) -> list[PromptReply]:
    """Send the requests ``batch`` at a time without waiting for replies (a batch stays below the
    prompt link's high-water mark, past which replies are dropped by design), collecting every reply."""
    sock = console.sock
    replies: list[PromptReply] = []
    deadline = time.monotonic() + timeout_s
    for start in range(0, len(requests), batch):
        for parts in requests[start:start + batch]:
            sock.send_multipart(parts)
        while len(replies) < min(len(requests), start + batch) and time.monotonic() < deadline:
            if sock.poll(200):
                replies.append(PromptReply.from_parts(sock.recv_multipart()))
    return replies


def test_queries_for_unseen_streams_while_two_streams_are_segmented(tmp_path: Path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        node.start("worker")
        camera = Camera(node, ("cam0", "cam1"))
        console = answering_console(node)
        try:
            for sid in ("cam0", "cam1"):  # an object on each stream, so both are segmented on every frame
                frame_id = latest_frame(console, sid)
                x, y = camera.cam.centre(0, frame_id % len(camera.frames))
                reply = console.request("click", stream_id=sid, object_id=1, x=x, y=y, frame_id=frame_id)
                assert reply.ok, reply.error
            requests = [[bytes(p) for p in StatePrompt(request_id=1000 + k, stream_id=f"ghost{k}").to_parts()]
                        for k in range(200)]
            requests += [[msgpack.packb({"type": "prompt", "v": PROTOCOL_VERSION, "op": "click",
                                         "request_id": 2000 + k, "stream": f"nobody{k}", "object_id": 1,
                                         "x": 5.0, "y": 5.0})] for k in range(50)]
            for _ in range(3):
                replies = pipelined(console, requests)
                assert len(replies) == len(requests), f"{len(replies)} replies, worker up: {node.running('worker')}"
                assert all(r.ok and r.state == {"objects": [], "revision": 0} for r in replies[:200])
                assert not any(r.ok for r in replies[200:])
                assert sorted(r.request_id for r in replies) == sorted(range(1000, 1200)) + sorted(range(2000, 2050))
            state = status(console)
            assert node.running("worker")
            assert sorted(state["streams"]) == ["cam0", "cam1"], sorted(state["streams"])[:5]
            processed = state["counters"]["frames_processed"]
            assert wait_until(lambda: status(console)["counters"]["frames_processed"] > processed + 10, timeout=20)
            latency = status(console)["latency_ms"]
            assert LATENCIES <= set(latency) and all(latency[k]["count"] > 0 for k in LATENCIES), latency
        finally:
            console.close()
            camera.close()


def test_a_stream_id_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        node.start("worker")
        ctx, pub = raw_socket(zmq.PUB, node.settings.endpoints.frames, bind=True)
        console = answering_console(node)
        try:
            _, frames = phantom_frames(bands=24, height=60, width=80, count=2)
            bad = frames[0]
            bad.stream_id = "cam0/x"

            def refused() -> bool:
                pub.send_multipart([b"frame/cam0/x/", *bad.to_parts()], copy=False)
                return status(console)["counters"].get("frames_rejected", 0) > 0

            assert wait_until(refused, timeout=10)
            state = status(console)
            assert state["streams"] == {} and any("'cam0/x' is not a stream id" in e for e in state["recent_errors"])

            reply = console.request("state", stream_id="cam0/x")  # the console matches the reply by its id
            assert not reply.ok and "is not a stream id" in reply.error
            header = {"type": "prompt", "v": PROTOCOL_VERSION, "op": "click", "request_id": 4242, "stream": "cam0/x",
                      "object_id": 1, "x": 1.0, "y": 1.0}
            (echo,) = pipelined(console, [[msgpack.packb(header)]])
            assert echo.request_id == 4242 and not echo.ok
            assert status(console)["streams"] == {} and node.running("worker")
        finally:
            console.close()
            pub.close(0)
            ctx.term()


def test_frame_ids_at_the_end_of_int64_keep_the_status_encodable(tmp_path: Path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        node.start("worker")
        ctx, pub = raw_socket(zmq.PUB, node.settings.endpoints.frames, bind=True)
        console = answering_console(node)
        try:
            _, (frame,) = phantom_frames(bands=24, height=60, width=80, count=1)
            def arrived(frame_id: int) -> bool:
                frame.frame_id = frame_id
                pub.send_multipart([topic("frame", "cam0"), *frame.to_parts()], copy=False)
                return status(console).get("streams", {}).get("cam0", {}).get("last_frame_id") == frame_id

            for frame_id in (0, INT64_MAX, 0, INT64_MAX, 0, INT64_MAX):
                assert wait_until(lambda f=frame_id: arrived(f), timeout=10, interval=0.1), f"{frame_id} never arrived"
            counters = status(console)["counters"]
            assert counters["frame_id_jumps"] == 3 and counters.get("frames_dropped", 0) == 0, counters
            assert node.running("worker")
        finally:
            console.close()
            pub.close(0)
            ctx.term()


@pytest.mark.parametrize("content", ["null", "[]", '{"streams": []}', '{"version": 1, "streams": {"cam0": []}}',
                                     '{"version": 1, "streams": {"cam0": {"objects": [], "order": "x"}}}'])
def test_the_worker_starts_with_a_state_file_of_the_wrong_shape(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(content)
    with LocalNode({**FAST, "worker": {"state_file": str(path)}}, run_dir=tmp_path) as node:
        node.start("worker")
        console = answering_console(node)
        try:
            state = status(console)
            assert state["counters"]["state_load_failed"] == 1 and state["streams"] == {}
            (aside,) = tmp_path.glob("prompts.json.bad-*")
            assert aside.read_text() == content
        finally:
            console.close()


def test_a_click_that_cannot_be_saved_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with LocalNode({**FAST, "worker": {"state_file": str(blocker / "prompts.json")}}, run_dir=tmp_path) as node:
        node.start("worker")
        node.start("ingest")
        console = answering_console(node)
        try:
            frame_id = latest_frame(console)
            reply = console.click(1, *phantom(node).centre(0, frame_id), frame_id=frame_id)
            assert reply.ok and len(reply.warnings) == 1, reply
            assert reply.warnings[0].startswith("click applied but not saved: cannot write prompt state to")
            assert status(console)["counters"]["state_save_failed"] == 1
            assert json.dumps(reply.state)  # the object is there, only not saved
        finally:
            console.close()
