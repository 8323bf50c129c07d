"""The frame link: one interface over sockets, shared memory and an in-process mailbox."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from samsa_stream.errors import TransportError
from samsa_stream.node import free_tcp_port, wait_until
from samsa_stream.protocol import CubeFrame, topic
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import load_settings
from samsa_stream.transport import FrameReceiver, InProcessLink, SocketFactory, SocketFrameLink, frame_link
from samsa_stream.transport.shm import SHM_DIR
from tests.conftest import phantom_frames


def send_until_received(send: Any, receiver: FrameReceiver, timeout: float = 20,
                        until: Any = lambda: True) -> list[CubeFrame]:
    """Send (again: a SUB socket misses what was sent before it joined) until a frame arrives and ``until()``,
    then read until the link is quiet, so no message is in flight when the sockets close."""
    got: list[CubeFrame] = []

    def arrived() -> bool:
        send()
        if receiver.pollable.poll(100):
            got.extend(receiver.receive())
        return bool(got) and until()

    assert wait_until(arrived, timeout=timeout), "nothing arrived"
    while receiver.pollable.poll(300):
        got.extend(receiver.receive())
    return got


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[SocketFactory]:
    settings = load_settings(overrides={"endpoints": {"frames": f"ipc://{tmp_path}/run/frames"}})
    with SocketFactory(settings) as factory:
        yield factory


@pytest.mark.parametrize("shared_memory", [False, True])
def test_in_process_link_round_trip(shared_memory: bool) -> None:
    link = InProcessLink(capacity=2, shared_memory=shared_memory, slots=3)
    stats = ProcessStats("test")
    sender, receiver = link.sender(stats), link.receiver(stats)
    _, frames = phantom_frames(count=3)
    try:
        assert sender.send(frames[0]) and sender.send(frames[1])
        assert not sender.send(frames[2])  # full: dropped, as at a socket's high-water mark
        got = receiver.receive()
        assert [f.frame_id for f in got] == [0, 1]
        np.testing.assert_array_equal(got[1].cube, frames[1].cube)
        assert (got[1].cube_ref is not None) == shared_memory
        assert [h[0] for h in got[1].hops] == ["ingest_out", "worker_in"]
        assert receiver.intact(got[1])
    finally:
        del got
        receiver.close()
        sender.close()
        link.close()


def test_a_received_frame_stays_intact_while_the_camera_laps_the_ring() -> None:
    link = InProcessLink(capacity=1, shared_memory=True, slots=3)
    stats = ProcessStats("test")
    sender, receiver = link.sender(stats), link.receiver(stats)
    _, frames = phantom_frames(count=12)
    try:
        assert sender.send(frames[0])
        (held,) = receiver.receive()
        for frame in frames[1:]:
            sender.send(frame)
            link.mailbox.take_all()  # a worker busy elsewhere never reads these
        assert receiver.intact(held)
        np.testing.assert_array_equal(held.cube, frames[0].cube)
        assert "shm_lease_overrides" not in stats.counters
    finally:
        del held
        receiver.close()
        sender.close()
        link.close()


def test_socket_link_on_ipc_passes_cubes_through_shared_memory(sockets: SocketFactory, tmp_path: Path) -> None:
    link = frame_link(sockets.settings, sockets)
    stats = ProcessStats("test")
    receiver = link.receiver(stats)
    sender = link.sender(stats)
    _, frames = phantom_frames(count=1)
    try:
        got = send_until_received(lambda: sender.send(frames[0]), receiver)
        assert got[0].frame_id == 0 and got[0].cube_ref is not None and Path(SHM_DIR, got[0].cube_ref["name"]).exists()
        assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700  # the socket folder, made private
    finally:
        got = []
        receiver.close()
        sender.close()


def test_cube_ref_on_a_tcp_link_is_a_rejection() -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    settings = load_settings(overrides={"endpoints": {"frames": endpoint}})
    stats = ProcessStats("test")
    with SocketFactory(settings) as factory:
        link = frame_link(settings, factory)
        assert isinstance(link, SocketFrameLink) and not link.shared_memory
        receiver = link.receiver(stats)
        pub = factory.socket("frames_out")
        _, frames = phantom_frames(count=2)
        forged = {"name": "samsa-cam0-1-abcdef", "slot": 0, "slot_bytes": 1 << 20, "seq": 1, "dtype": "<f4",
                  "shape": list(frames[0].cube.shape)}
        messages = [[topic("frame", "cam0"), *frames[0].to_parts(forged)],
                    [topic("frame", "cam0"), *frames[1].to_parts()]]

        def deliver() -> None:
            for parts in messages:
                pub.send_multipart(parts, copy=False)

        got = send_until_received(deliver, receiver, until=lambda: stats.counters["frames_rejected"] >= 1)
        assert "refused" in " ".join(stats.errors) and "may leave this host" in " ".join(stats.errors)
        assert all(f.cube_ref is None for f in got)
        with pytest.raises(TransportError, match="same-host"):
            SocketFrameLink(factory, endpoint, shared_memory=True)


def test_receiver_counts_every_bad_message_and_raises_none() -> None:
    link = InProcessLink(capacity=16, shared_memory=True)
    stats = ProcessStats("test")
    receiver = link.receiver(stats)
    _, frames = phantom_frames(count=1)
    good = [topic("frame", "cam0"), *frames[0].to_parts()]
    header = msgpack.unpackb(bytes(good[1]))
    bad = [
        [],
        [b"frame/cam0/"],
        [b"frame/cam0/", b"\xc1"],
        [b"frame/cam0/", msgpack.packb({**header, "arrays": [{"name": ["cube"], "dtype": "<f4", "shape": [1]}]}),
         *good[2:]],
        [b"frame/cam0/", msgpack.packb({**header, "arrays": [{**header["arrays"][0], "dtype": {"a": 1}},
                                                             *header["arrays"][1:]]}), *good[2:]],
        [b"frame/cam0/", msgpack.packb({**header, "cube_ref": {"name": "samsa-cam0-1-abcdef", "slot": 2**63 - 1,
                                                               "slot_bytes": 2**63 - 1, "seq": 1, "dtype": "<f4",
                                                               "shape": [1, 1, 1]}}), *good[2:]],
        [b"frame/cam0/", msgpack.packb({**header, "cube_ref": {"name": "samsa-cam0-1-abcdef", "slot": 0,
                                                               "slot_bytes": 64, "seq": 1, "dtype": "nonsense",
                                                               "shape": [1, 1, 1]}}), *good[2:]],
        [b"frame/cam0/", msgpack.packb({**header, "cube_ref": {"name": "samsa-cam0-1-abcdef", "slot": 0,
                                                               "slot_bytes": 64, "seq": 1, "dtype": "<f4",
                                                               "shape": [1e308, 1, 1]}}), *good[2:]],
    ]
    for parts in bad:
        assert link.put(parts)
        assert receiver.receive() == []
    assert stats.counters["frames_rejected"] == len(bad)
    assert stats.counters["frame_decoder_faults"] == 0
    assert link.put(good) and len(receiver.receive()) == 1
    receiver.close()
    link.close()


def test_one_worker_takes_frames_from_every_cameras_endpoint(tmp_path: Path) -> None:
    """endpoints.frame_sources: each camera's ingest binds its own endpoint, the worker connects to all."""
    import contextlib

    cams = {sid: f"ipc://{tmp_path}/run/frames-{sid}" for sid in ("cam0", "cam1")}
    worker_settings = load_settings(overrides={"endpoints": {"frame_sources": ",".join(cams.values())}})
    stats = ProcessStats("test")
    with contextlib.ExitStack() as stack:
        factory = stack.enter_context(SocketFactory(worker_settings))
        receiver = frame_link(worker_settings, factory).receiver(stats)
        stack.callback(receiver.close)
        senders = []
        for sid, endpoint in cams.items():
            cam_settings = load_settings(overrides={"endpoints": {"frames": endpoint}})
            cam_factory = stack.enter_context(SocketFactory(cam_settings, factory.context))
            sender = frame_link(cam_settings, cam_factory).sender(stats)
            stack.callback(sender.close)
            _, frames = phantom_frames(count=1, stream_id=sid)
            senders.append((sender, frames[0]))
        got: list[CubeFrame] = []

        def both_arrived() -> bool:
            for sender, frame in senders:
                sender.send(frame)  # again: a SUB misses what was sent before it joined
            if receiver.pollable.poll(100):
                got.extend(receiver.receive())
            return {f.stream_id for f in got} == set(cams)

        assert wait_until(both_arrived, timeout=20), f"arrived: {sorted({f.stream_id for f in got})}"
        assert all(f.cube_ref is not None for f in got)  # same host: cubes through shared memory
        while receiver.pollable.poll(300):
            receiver.receive()
        got.clear()


def test_shared_memory_on_with_a_camera_beyond_this_host_is_refused(tmp_path: Path) -> None:
    settings = load_settings(overrides={"sockets": {"shared_memory": "on"}, "endpoints": {
        "frames": f"ipc://{tmp_path}/frames", "frame_sources": f"ipc://{tmp_path}/a,tcp://10.0.0.5:5555"}})
    with SocketFactory(settings) as factory, pytest.raises(TransportError, match="tcp://10.0.0.5:5555"):
        frame_link(settings, factory)


def test_frame_sources_must_be_endpoints() -> None:
    from samsa_stream.settings import SettingsError

    with pytest.raises(SettingsError, match="frame_sources"):
        load_settings(overrides={"endpoints": {"frame_sources": "ipc:///tmp/a,http://x"}})
    assert load_settings().endpoints.frames_in() == [load_settings().endpoints.frames]
