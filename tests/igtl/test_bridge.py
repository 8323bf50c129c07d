"""The OpenIGTLink bridge: masks -> label map values and geometry (pure), the multi-client server with
pyigtl's own client on the other end, and the bridge loop fed by broadcasts from a socket of the test's."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyigtl
import pytest
import zmq
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from samsa_stream.cli import build_parser, settings_from
from samsa_stream.errors import ProtocolError, TransportError
from samsa_stream.igtl import (
    STATUS_DEVICE,
    IgtlServer,
    ijk_to_ras,
    image_message,
    label_map,
    label_message,
    label_value,
    run_igtl,
)
from samsa_stream.node import free_tcp_port, wait_until
from samsa_stream.protocol import MaskBroadcast, ObjectMask, OverlayImage, StreamInfo, encode_image
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import Settings, load_settings
from tests.igtl import RecordingClient, status_and_labels

CAPTURE_NS = 1_700_000_000_123_456_789


def obj(object_id: int, mask: np.ndarray) -> ObjectMask:
    return ObjectMask(object_id, f"object {object_id}", (255, 0, 0), mask, 0.9)


def unpack(data: bytes) -> Any:
    """A packed message read back as an OpenIGTLink client reads it."""
    header = pyigtl.MessageBase.parse_header(data[:pyigtl.MessageBase.IGTL_HEADER_SIZE])
    message = pyigtl.MessageBase.create_message(header["message_type"])
    message.unpack(header, data[pyigtl.MessageBase.IGTL_HEADER_SIZE:])
    return message


# --- pure conversion ---------------------------------------------------------------------------------------------

def test_label_values_are_object_ids_wrapped_into_1_to_255() -> None:
    assert [label_value(i) for i in (1, 2, 254, 255, 256, 257, 510, 511, 2**31 - 1)] == \
        [1, 2, 254, 255, 1, 2, 255, 1, (2**31 - 2) % 255 + 1]
    with pytest.raises(ProtocolError, match="object id must be 1 or more"):
        label_value(0)


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 600), st.integers(0, 2**32 - 1)), max_size=5), st.integers(1, 9),
       st.integers(1, 11))
def test_each_pixel_shows_the_last_object_that_covers_it(specs: list[tuple[int, int]], h: int, w: int) -> None:
    objects = [obj(oid, np.random.default_rng(seed).random((h, w)) < 0.4) for oid, seed in specs]
    got = label_map(objects, (h, w))
    assert got.dtype == np.uint8 and got.shape == (h, w)
    for r in range(h):
        for c in range(w):
            covering = [o.object_id for o in objects if o.mask[r, c]]
            assert got[r, c] == ((covering[-1] - 1) % 255 + 1 if covering else 0)


def test_a_mask_of_another_size_is_refused() -> None:
    with pytest.raises(ProtocolError, match="object 3: mask is 4 x 5, the frame is 4 x 6"):
        label_map([obj(3, np.ones((4, 5), bool))], (4, 6))


def test_geometry_puts_columns_on_i_and_rows_on_j() -> None:
    matrix = ijk_to_ras((0.5, 0.25, 2.0), (10.0, -5.0, 3.0))
    row, col = 7, 3
    assert np.allclose(matrix @ [col, row, 0, 1], [10.0 + 3 * 0.5, -5.0 + 7 * 0.25, 3.0, 1.0])
    assert np.allclose(matrix[:3, :3], np.diag([0.5, 0.25, 2.0]))
    flipped = ijk_to_ras((-0.5, -0.25, 2.0), (10.0, -5.0, 3.0))  # a negative spacing turns that axis round
    assert np.allclose(flipped @ [col, row, 0, 1], [10.0 - 3 * 0.5, -5.0 - 7 * 0.25, 3.0, 1.0])
    for spacing, origin in (((0.0, 1.0, 1.0), (0.0, 0.0, 0.0)), ((1.0, float("nan"), 1.0), (0.0, 0.0, 0.0)),
                            ((1.0, 1.0, 1.0), (0.0, float("inf"), 0.0))):
        with pytest.raises(ProtocolError, match="spacing must be finite and not zero, origin finite"):
            ijk_to_ras(spacing, origin)


def test_label_map_and_overlay_read_back_as_a_client_sees_them() -> None:
    first = np.zeros((6, 9), bool)
    first[1:4, 2:7] = True
    second = np.zeros((6, 9), bool)
    second[3:6, 5:9] = True  # overlaps the first at rows 3, columns 5-6
    matrix = ijk_to_ras((-0.5, -0.25, 2.0), (10.0, -5.0, 3.0))
    got = unpack(label_message([obj(1, first), obj(300, second)], (6, 9), CAPTURE_NS, "SamsaLabels", matrix).pack())
    assert got.message_type == "IMAGE" and got.device_name == "SamsaLabels"
    assert got.world_coordinate_system == "ras"
    assert got.image.shape == (1, 6, 9) and got.image.dtype == np.uint8  # (k, j, i): rows are J, columns I
    expected = np.zeros((6, 9), np.uint8)
    expected[first] = 1
    expected[second] = 45  # id 300 wrapped: (300 - 1) % 255 + 1
    assert np.array_equal(got.image[0], expected)
    assert got.timestamp == pytest.approx(CAPTURE_NS / 1e9, abs=1e-6)
    assert np.allclose(got.ijk_to_world_matrix, matrix, atol=1e-5)  # spacing, direction and origin, via the centre

    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    overlay = unpack(image_message(rgb, "SamsaOverlay", CAPTURE_NS, matrix).pack())
    assert overlay.device_name == "SamsaOverlay" and overlay.image.shape == (1, 6, 9, 3)
    assert np.array_equal(overlay.image[0], rgb)
    with pytest.raises(ProtocolError, match="must be uint8"):
        image_message(rgb.astype(np.float32), "SamsaOverlay", CAPTURE_NS, matrix)


# --- the server ---------------------------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[IgtlServer]:
    with IgtlServer(0, True, ProcessStats("igtl"), stall_timeout_s=0.3) as srv:
        yield srv


def note(text: str) -> bytes:
    return pyigtl.StringMessage(text, device_name="Note").pack()


def connect(server: IgtlServer, count: int) -> list[RecordingClient]:
    clients = [RecordingClient(server.port) for _ in range(count)]
    assert wait_until(lambda: (server.accept(), server.clients == count)[1], timeout=10), "clients did not connect"
    return clients


def test_several_clients_and_one_leaving_does_not_stop_the_others(server: IgtlServer) -> None:
    a, b = connect(server, 2)
    try:
        assert server.send(("STRING", "Note"), note("one")) == 2
        assert wait_until(lambda: a.texts("Note") == ["one"] and b.texts("Note") == ["one"], timeout=10)
        b.close()
        assert wait_until(lambda: (server.reap(), server.clients == 1)[1], timeout=10), "the closed client stayed"
        assert server.stats.counters["clients_disconnected"] == 1
        assert server.send(("STRING", "Note"), note("two")) == 1
        assert wait_until(lambda: a.texts("Note") == ["one", "two"], timeout=10)
    finally:
        a.close()
        b.close()


def test_a_stalled_client_is_dropped_and_holds_up_nobody(server: IgtlServer) -> None:
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # connects, never reads
    stalled.connect(("127.0.0.1", server.port))
    assert wait_until(lambda: (server.accept(), server.clients == 1)[1], timeout=10)
    healthy = RecordingClient(server.port)
    try:
        assert wait_until(lambda: (server.accept(), server.clients == 2)[1], timeout=10)
        big = np.zeros((512, 1024), np.uint8)
        matrix = ijk_to_ras((1, 1, 1), (0, 0, 0))
        sent: list[int] = []

        def send_one() -> bool:
            n = len(sent) + 1
            sent.append(n)
            server.send(("IMAGE", "Big"), image_message(big, "Big", n * 10**9, matrix).pack())
            server.reap()
            return server.stats.counters["clients_stalled"] == 1

        assert wait_until(send_one, timeout=20), "the stalled client was never dropped"
        assert server.clients == 1
        last = len(sent) * 10**9 + 10**9
        server.send(("IMAGE", "Big"), image_message(big, "Big", last, matrix).pack())
        assert wait_until(lambda: any(m.timestamp == last / 1e9 for m in healthy.messages("Big")), timeout=10), \
            "the healthy client missed the newest image"
        assert len(healthy.messages("Big")) >= 2  # it was served while the other stalled, not only after
    finally:
        healthy.close()
        stalled.close()


def test_clients_beyond_the_limit_are_refused() -> None:
    with IgtlServer(0, True, ProcessStats("igtl"), max_clients=1) as srv:
        first = RecordingClient(srv.port)
        assert wait_until(lambda: (srv.accept(), srv.clients == 1)[1], timeout=10)
        extra = socket.create_connection(("127.0.0.1", srv.port))
        try:
            assert wait_until(lambda: (srv.accept(), srv.stats.counters["clients_refused"] == 1)[1], timeout=10)
            assert srv.clients == 1
            extra.settimeout(5)
            assert extra.recv(1) == b""  # closed by the server
        finally:
            first.close()
            extra.close()


def test_a_port_in_use_is_named() -> None:
    with IgtlServer(0, True, ProcessStats("igtl")) as srv:
        with pytest.raises(TransportError, match=f"cannot listen for OpenIGTLink clients on 127.0.0.1:{srv.port}"):
            IgtlServer(srv.port, True, ProcessStats("igtl"))


def test_the_command_line_sets_port_and_stream() -> None:
    args = build_parser().parse_args(["igtl", "--port", "20001", "--stream", "cam1", "--overlay"])
    cfg = settings_from(args).igtl
    assert (cfg.port, cfg.stream_id, cfg.send_overlay) == (20001, "cam1", True)


# --- the bridge loop, fed by the test's own broadcast socket ------------------------------------------------------

@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(overrides={
        "endpoints": {"broadcast": f"ipc://{tmp_path}/broadcast"}, "display": {"stale_after_s": 0.5},
        "sockets": {"poll_ms": 20},
        "igtl": {"port": free_tcp_port(), "send_overlay": True, "spacing_mm": [0.5, 0.25, 2.0],
                 "origin_mm": [10.0, -5.0, 3.0]}})


def masks(seq: int, objects: list[ObjectMask]) -> MaskBroadcast:
    return MaskBroadcast("cam0", 100 + seq, CAPTURE_NS + seq * 40_000_000, (6, 9), objects, "spectral", seq=seq,
                         publisher="p" * 16)


def info(seq: int, stale: bool) -> StreamInfo:
    return StreamInfo("cam0", 100 + seq, CAPTURE_NS + seq * 40_000_000, (6, 9), "spectral", stale=stale, seq=seq,
                      publisher="p" * 16)


def test_the_bridge_serves_label_maps_and_pauses_them_while_stale(settings: Settings, tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(settings.endpoints.broadcast)
    stop = threading.Event()
    stats_file = tmp_path / "stats_igtl.json"
    bridge = threading.Thread(target=run_igtl, args=(settings, stop, stats_file), daemon=True)
    bridge.start()
    client: RecordingClient | None = None
    cfg = settings.igtl

    def send(message: Any, kind: str) -> None:
        pub.send_multipart([f"{kind}/cam0/".encode(), *[bytes(p) for p in message.to_parts()]])

    def labels() -> list[Any]:
        return [] if client is None else client.messages(cfg.label_device, "IMAGE")

    try:
        subscribed: list[bytes] = []
        assert wait_until(lambda: (pub.poll(50) and subscribed.append(pub.recv()), len(subscribed) == 3)[1],
                          timeout=10), "the bridge did not subscribe"
        # stream first: a bridge joining a stale stream learns so before the replayed mask
        assert subscribed == [b"\x01stream/cam0/", b"\x01mask/cam0/", b"\x01overlay/cam0/"]
        client = RecordingClient(cfg.port)
        assert wait_until(lambda: client.texts(STATUS_DEVICE) == ["waiting: no mask of stream cam0 yet"], timeout=10)

        left = np.zeros((6, 9), bool)
        left[1:4, 2:7] = True
        right = np.zeros((6, 9), bool)
        right[3:6, 5:9] = True
        # What a bridge joining a stale stream is replayed: the stale stream message, then the newest mask.
        send(info(1, stale=True), "stream")
        send(masks(1, [obj(1, left)]), "mask")
        assert wait_until(lambda: client.texts(STATUS_DEVICE)[-1:] == [
            "stale: stream cam0 has no live mask (newest frame 101); label maps paused until masks resume"], 10)

        send(masks(2, [obj(1, left), obj(2, right)]), "mask")
        send(info(2, stale=False), "stream")
        rgb = np.random.default_rng(2).integers(0, 256, (6, 9, 3), dtype=np.uint8)
        send(OverlayImage("cam0", 102, CAPTURE_NS + 2 * 40_000_000, "png", encode_image(rgb, "png"), seq=2,
                          publisher="p" * 16), "overlay")
        assert wait_until(lambda: len(labels()) == 1 and client.messages(cfg.overlay_device), timeout=10)
        label = labels()[0]
        expected = np.zeros((6, 9), np.uint8)
        expected[left] = 1
        expected[right] = 2
        assert np.array_equal(label.image[0], expected)
        assert label.timestamp == pytest.approx((CAPTURE_NS + 2 * 40_000_000) / 1e9, abs=1e-6)
        assert np.allclose(label.ijk_to_world_matrix, ijk_to_ras(cfg.spacing_mm, cfg.origin_mm), atol=1e-5)
        overlay = client.messages(cfg.overlay_device)[0]
        assert np.array_equal(overlay.image[0], rgb) and overlay.timestamp == pytest.approx(label.timestamp, abs=1e-6)

        # No new mask for display.stale_after_s by the bridge's clock: stale; the next mask is live again.
        assert wait_until(lambda: client.texts(STATUS_DEVICE)[-1].startswith("stale"), timeout=10)
        send(masks(3, []), "mask")
        assert wait_until(lambda: len(labels()) == 2, timeout=10)
        assert not labels()[1].image.any()  # no objects: background only
        events = status_and_labels(client.messages(), cfg.label_device)
        assert events == ["waiting", "stale", "live", "label", "stale", "live", "label"], events
    finally:
        if client is not None:
            client.close()
        stop.set()
        bridge.join(10)
        pub.close()
        ctx.term()
    assert not bridge.is_alive()
    stats = json.loads(stats_file.read_text())
    counters = stats["counters"]
    assert counters["label_maps_sent"] == 2 and counters["label_maps_skipped_stale"] == 1
    assert counters["stale_periods"] == 2 and counters["overlays_sent"] == 1 and counters["clients_connected"] == 1
    assert "clients" in stats  # the gauge of connected clients
