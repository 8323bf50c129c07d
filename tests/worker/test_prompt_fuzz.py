"""Any prompt, typed or raw bytes, gets one encodable reply; queries change nothing; no prompt creates
a stream; the prompt socket answers every request, echoing its id whenever it can be read."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.protocol import (
    PROTOCOL_VERSION,
    ClickPrompt,
    PromptReply,
    PromptRequest,
    RemovePrompt,
    ResetPrompt,
    StatePrompt,
    StatusPrompt,
    UndoPrompt,
    encode,
)
from samsa_stream.settings import load_settings
from samsa_stream.worker import core
from samsa_stream.worker.core import Worker
from samsa_stream.worker.process import _serve_prompts
from tests.conftest import phantom_frames

CAM, FRAMES = phantom_frames(count=2, bands=8)
_, OTHER = phantom_frames(count=1, bands=8, stream_id="cam1")
SETTINGS = load_settings(overrides={"worker": {"max_streams": 4}})

stream_ids = st.sampled_from(["cam0", "cam1", "cam2"]) | st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
object_ids = st.integers(1, 3) | st.integers(-3, 2**70)
coordinates = st.floats(-5, 90) | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([30.0, 20.0])
frame_ids = st.none() | st.integers(0, 3) | st.integers(0, 2**63 - 1)

prompts = st.one_of(
    st.builds(ClickPrompt, stream_id=stream_ids, object_id=object_ids, x=coordinates, y=coordinates,
              positive=st.booleans(), frame_id=frame_ids, label=st.none() | st.text(max_size=200),
              request_id=st.integers(0, 2**63 - 1)),
    st.builds(UndoPrompt, stream_id=stream_ids, object_id=st.none() | object_ids),
    st.builds(RemovePrompt, stream_id=stream_ids, object_id=object_ids),
    st.builds(ResetPrompt, stream_id=stream_ids),
    st.builds(StatePrompt, stream_id=stream_ids),
    st.builds(StatusPrompt),
)


def fresh_worker() -> Worker:
    worker = Worker(SETTINGS)
    worker.accept(FRAMES[0])
    worker.accept(OTHER[0])
    return worker


def books(worker: Worker) -> dict[str, Any]:
    return {sid: s.book.state() for sid, s in worker.streams.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(prompts, min_size=1, max_size=12))
def test_any_typed_prompt_gets_an_encodable_reply(sequence: list[PromptRequest]) -> None:
    worker = fresh_worker()
    changes = 0
    for request in sequence:
        before = books(worker)
        reply = worker.handle_prompt(request)
        back = PromptReply.from_parts(reply.to_parts())
        assert back.request_id == request.request_id
        if isinstance(request, (StatePrompt, StatusPrompt)):
            assert reply.ok and books(worker) == before  # queries change nothing
        else:
            changes += 1
        assert set(worker.streams) <= {"cam0", "cam1"}  # only frames make streams
        for sid in worker.dirty_streams():
            result = worker.segment(sid)
            assert {o.object_id for o in result.objects} <= set(worker.streams[sid].book.objects)
    counters = worker.stats.counters
    assert counters["prompts_applied"] + counters["prompts_rejected"] == changes
    worker.accept(FRAMES[1])
    for sid in worker.dirty_streams():
        worker.segment(sid)


header_values = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=70) \
    | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3) \
    | st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2)
header_keys = st.sampled_from(["type", "v", "op", "request_id", "stream", "object_id", "x", "y", "positive",
                               "frame_id", "label", "arrays"])
base_headers = st.fixed_dictionaries({"type": st.just("prompt"), "v": st.just(PROTOCOL_VERSION),
                                      "op": st.sampled_from(["click", "undo", "remove", "reset", "state", "status",
                                                             "explode"]),
                                      "request_id": st.integers(0, 2**63 - 1), "stream": stream_ids})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=base_headers, changes=st.dictionaries(header_keys, header_values, max_size=4),
       extra_parts=st.lists(st.binary(max_size=8), max_size=2))
def test_any_raw_request_gets_one_reply_with_its_id_when_readable(base: dict[str, Any], changes: dict[str, Any],
                                                                 extra_parts: list[bytes]) -> None:
    worker = fresh_worker()
    header = {**base, **changes}
    reply = worker.answer([msgpack.packb(header), *extra_parts])
    back = PromptReply.from_parts(reply.to_parts())
    rid = header.get("request_id")
    if type(rid) is int and 0 <= rid <= 2**63 - 1:
        assert back.request_id == rid
    if not reply.ok:
        assert reply.error
    assert set(worker.streams) <= {"cam0", "cam1"}


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(st.binary(max_size=40), max_size=3))
def test_garbage_bytes_are_a_counted_rejection(parts: list[bytes]) -> None:
    worker = fresh_worker()
    reply = worker.answer(parts)
    PromptReply.from_parts(reply.to_parts())
    assert not reply.ok and reply.error.startswith("malformed prompt request")
    assert worker.stats.counters["prompts_rejected"] == 1


@pytest.fixture
def prompt_link():
    ctx = zmq.Context()
    server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    server.bind("inproc://prompts")
    client.connect("inproc://prompts")
    yield server, client
    server.close(0)
    client.close(0)
    ctx.term()


def _exchange(server: zmq.Socket, client: zmq.Socket, worker: Worker, requests: list[list[bytes]]) -> list[PromptReply]:
    for parts in requests:
        client.send_multipart(parts)
    got: list[PromptReply] = []
    while len(got) < len(requests):
        assert server.poll(2000), "a request got no reply"
        _serve_prompts(server, worker)
        while client.poll(100):
            got.append(PromptReply.from_parts(client.recv_multipart()))
    return got


def test_the_prompt_socket_answers_every_request(prompt_link) -> None:
    server, client = prompt_link
    worker = fresh_worker()
    requests = [
        [b"\xc1 not msgpack"],
        [msgpack.packb({"type": "prompt", "v": PROTOCOL_VERSION, "op": "click", "request_id": 77, "stream": "cam0"})],
        [msgpack.packb({"type": "prompt", "v": PROTOCOL_VERSION, "op": "state", "request_id": 78,
                        "stream": "cam0/x"})],
        [*encode({"type": "prompt", "op": "state", "request_id": 79, "stream": "cam0"})],
        [*StatusPrompt(request_id=80).to_parts()],
    ]
    replies = _exchange(server, client, worker, requests)
    assert [r.request_id for r in replies] == [0, 77, 78, 79, 80]
    assert [r.ok for r in replies] == [False, False, False, True, True]
    assert "click needs object_id, x, y" in replies[1].error and "is not a stream id" in replies[2].error
    assert worker.stats.counters["prompts_rejected"] == 3


def test_unexpected_faults_are_counted_replies(prompt_link, monkeypatch) -> None:
    server, client = prompt_link
    worker = fresh_worker()

    def broken_decode(parts: list[Any]) -> PromptRequest:
        raise TypeError("a decoder bug")

    def broken_handle(request: PromptRequest) -> PromptReply:
        raise RuntimeError("an engine bug")

    monkeypatch.setattr(core, "decode_prompt", broken_decode)
    (reply,) = _exchange(server, client, worker, [[*StatusPrompt(request_id=5).to_parts()]])
    assert not reply.ok and worker.stats.counters["prompts_rejected"] == 1
    monkeypatch.undo()
    monkeypatch.setattr(worker, "handle_prompt", broken_handle)
    (reply,) = _exchange(server, client, worker, [[*StatusPrompt(request_id=6).to_parts()]])
    assert reply.request_id == 6 and not reply.ok and "internal error" in reply.error
    assert worker.stats.counters["prompts_failed"] == 1
