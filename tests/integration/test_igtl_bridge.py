"""``samsa-stream igtl`` as a process of a real node: pyigtl's client receives label maps whose pixels are the
masks a display got for the same frame, several clients at once, and no label map while the stream is stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from samsa_stream.igtl import STATUS_DEVICE, ijk_to_ras
from samsa_stream.node import LocalNode, free_tcp_port, wait_until
from samsa_stream.protocol import MaskBroadcast
from tests.igtl import RecordingClient, status_and_labels
from tests.integration.conftest import FAST, Display, console_for, latest_frame, phantom, start_all

GEOMETRY = {"spacing_mm": [-0.2, -0.3, 1.5], "origin_mm": [-12.0, 4.5, 30.0]}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalNode]:
    with LocalNode({**FAST, "igtl": {"port": free_tcp_port(), **GEOMETRY}}, transport="ipc", run_dir=tmp_path) as n:
        yield n
        for name in n.procs:  # a failing test shows what each process said
            print(f"--- {name} log ---\n{n.log_text(name)[-3000:]}")


def click(node: LocalNode, object_ids: tuple[int, ...] = (1,)) -> int:
    console = console_for(node)
    try:
        frame_id = latest_frame(console)
        for oid in object_ids:
            reply = console.click(oid, *phantom(node).centre(oid - 1, frame_id), frame_id=frame_id)
            assert reply.ok, reply.error
        return frame_id
    finally:
        console.close()


def labels(client: RecordingClient, node: LocalNode) -> list[Any]:
    return client.messages(node.settings.igtl.label_device, "IMAGE")


def expected_labels(masks: MaskBroadcast) -> np.ndarray:
    out = np.zeros(masks.size, np.uint8)
    for obj in masks.objects:  # ids here are small: the label value is the id
        out[obj.mask] = obj.object_id
    return out


def test_clients_get_the_masks_of_each_frame_as_label_maps(node: LocalNode) -> None:
    start_all(node)
    node.start("igtl")
    display = Display(node)
    a, b = RecordingClient(node.settings.igtl.port), RecordingClient(node.settings.igtl.port)
    try:
        click(node, (1, 2))
        seen: dict[int, list[MaskBroadcast]] = {}

        def matched() -> list[tuple[Any, list[MaskBroadcast]]]:
            for m in display.masks(50, timeout_s=0.05):
                seen.setdefault(m.capture_ns, []).append(m)
            # The label map's timestamp is its frame's capture time: that is how a client tells the frame
            # (to within a microsecond through pyigtl's float seconds; frames are 40 ms apart). A frame
            # segmented again after a prompt change has two mask messages: the label map shows one of them.
            times = np.array(sorted(seen), dtype=np.int64)
            pairs = []
            for lm in labels(a, node) if times.size else []:
                nearest = int(times[np.abs(times / 1e9 - lm.timestamp).argmin()])
                if abs(nearest / 1e9 - lm.timestamp) < 1e-6 and len(seen[nearest][-1].objects) == 2:
                    pairs.append((lm, seen[nearest]))
            return pairs

        assert wait_until(lambda: len(matched()) >= 5, timeout=30), \
            f"{len(labels(a, node))} label maps, {len(seen)} frames' masks, none of the same frame with both objects"
        cfg = node.settings.igtl
        for label, same_frame in matched():
            assert label.device_name == cfg.label_device and label.image.shape == (1, *same_frame[0].size)
            assert any(np.array_equal(label.image[0], expected_labels(m)) for m in same_frame), \
                f"frame {same_frame[0].frame_id}"
            assert np.allclose(label.ijk_to_world_matrix, ijk_to_ras(cfg.spacing_mm, cfg.origin_mm), atol=1e-4)
        assert any(set(np.unique(label.image)) == {0, 1, 2} for label, _ in matched())
        assert wait_until(lambda: len(labels(b, node)) >= 5, timeout=10), "the second client got no label maps"

        b.close()  # mid-stream: the other client goes on
        before = len(labels(a, node))
        assert wait_until(lambda: len(labels(a, node)) >= before + 10, timeout=20), "the first client stopped"
        events = status_and_labels(a.messages(), cfg.label_device)  # never a label map while stale
        assert events[0] in ("waiting", "live") and events.index("live") < events.index("label"), events[:5]
    finally:
        a.close()
        b.close()
        display.close()
    assert node.stop("igtl") == 0
    counters = node.stats("igtl")["counters"]
    assert counters["clients_connected"] == 2 and counters["clients_disconnected"] >= 1
    assert counters["label_maps_sent"] >= 15 and counters.get("messages_rejected", 0) == 0


def test_no_label_maps_while_the_worker_is_stopped(node: LocalNode, tmp_path: Path) -> None:
    node.env["SAMSA_WORKER__STATE_FILE"] = str(tmp_path / "prompts.json")  # the click survives the restart
    start_all(node)
    node.start("igtl")
    client = RecordingClient(node.settings.igtl.port)
    try:
        click(node)
        assert wait_until(lambda: any(lm.image.any() for lm in labels(client, node)), timeout=30)
        node.stop("worker")
        assert wait_until(lambda: client.texts(STATUS_DEVICE)[-1].startswith("stale"), timeout=15), \
            client.texts(STATUS_DEVICE)
        paused_at = len(labels(client, node))
        node.start("worker")
        assert wait_until(lambda: client.texts(STATUS_DEVICE)[-1].startswith("live")
                          and len(labels(client, node)) > paused_at and labels(client, node)[-1].image.any(),
                          timeout=30), "label maps did not resume after the worker restarted"
        events = status_and_labels(client.messages(), node.settings.igtl.label_device)  # none while stale
        stale_at = events.index("stale")
        assert events[stale_at + 1] == "live" and events[stale_at + 2] == "label", events[stale_at - 2:]
        times = [lm.timestamp for lm in labels(client, node)]
        assert times[paused_at] > times[paused_at - 1]  # newer frames, not the old mask again
    finally:
        client.close()
    assert node.stop("igtl") == 0
    counters = node.stats("igtl")["counters"]
    assert counters["stale_periods"] >= 1 and counters["label_maps_sent"] >= paused_at + 1
