"""The frame link between real ingest and worker processes: cubes through shared memory on ipc,
descriptors refused where they must be (tcp, planted files), and nothing left behind after a clean stop."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from samsa_stream.node import LocalNode, wait_until
from samsa_stream.protocol import topic
from samsa_stream.transport import ShmWriter
from samsa_stream.transport.shm import SHM_DIR
from tests.conftest import phantom_frames
from tests.integration.conftest import FAST, console_for, latest_frame, raw_socket, status


def _rings(pid: int) -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith("samsa-cam0-") and n.split("-")[-2] == str(pid)]


def test_ipc_frames_pass_through_shared_memory_and_clean_up(tmp_path: Path) -> None:
    with LocalNode(FAST, transport="ipc", run_dir=tmp_path) as node:
        for name in ("publisher", "worker", "ingest"):
            node.start(name)
        console = console_for(node)
        try:
            latest_frame(console, timeout_s=30)
            ingest_pid = node.procs["ingest"].pid
            assert _rings(ingest_pid), "ingest made no shared-memory ring"
            counters = status(console)["counters"]
            assert counters.get("frames_rejected", 0) == 0, counters
        finally:
            console.close()
        socket_dir = Path(node.settings.endpoints.frames[len("ipc://"):]).parent
        for name in ("ingest", "worker", "publisher"):
            assert node.stop(name) == 0, node.log_text(name)[-2000:]
        assert node.stats("ingest")["shared_memory"] is True
        assert not _rings(ingest_pid), "the ring outlived a clean stop"
        assert not [p.name for p in socket_dir.iterdir() if p.is_socket()], "ipc socket files outlived a clean stop"


@pytest.fixture
def planted_ring(tmp_path: Path) -> Iterator[tuple[dict, dict]]:
    """(a real ring's descriptor, the same naming a symlink planted under /dev/shm that points at a copy of
    the ring outside it); the symlink and the ring are removed afterwards."""
    _, frames = phantom_frames(bands=24, height=60, width=80, count=1)
    writer = ShmWriter("cam0", slots=3)
    planted = Path(SHM_DIR, f"samsa-cam0-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        ref = writer.put(frames[0].cube)
        target = tmp_path / "not-shared-memory"
        target.write_bytes(Path(SHM_DIR, ref.name).read_bytes())
        planted.symlink_to(target)
        yield ref.to_header(), {**ref.to_header(), "name": planted.name}
    finally:
        if planted.is_symlink():
            planted.unlink()
        writer.close()


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_worker_refuses_planted_and_cross_host_descriptors(tmp_path: Path, planted_ring: tuple[dict, dict],
                                                           transport: str) -> None:
    """The test plays the camera. On ipc: a descriptor naming a symlink planted under /dev/shm (to a file
    that looks exactly like a ring) is refused, never mapped. On tcp: any descriptor is refused."""
    real, forged = planted_ring
    descriptor, words = (forged, "cannot be opened") if transport == "ipc" else (real, "may leave this host")
    _, frames = phantom_frames(bands=24, height=60, width=80, count=2)
    with LocalNode(FAST, transport=transport, run_dir=tmp_path) as node:
        node.start("worker")
        ctx, cam = raw_socket(zmq.PUB, node.settings.endpoints.frames, bind=True)
        console = console_for(node)
        try:
            def refused() -> bool:
                cam.send_multipart([topic("frame", "cam0"), *frames[0].to_parts(descriptor)], copy=False)
                return status(console)["counters"].get("frames_rejected", 0) > 0

            assert wait_until(refused, timeout=20, interval=0.1)
            st = status(console)
            assert words in " ".join(st["recent_errors"]), st["recent_errors"]
            assert "cam0" not in st["streams"]  # no frame of it was accepted

            def plain_frame_taken() -> bool:  # the same worker takes a plain frame on the same link
                cam.send_multipart([topic("frame", "cam0"), *frames[1].to_parts()])
                return status(console)["streams"].get("cam0", {}).get("last_frame_id") == 1

            assert wait_until(plain_frame_taken, timeout=20, interval=0.1)
        finally:
            console.close()
            cam.close()
            ctx.term()
        assert node.stop("worker") == 0
        assert "Traceback" not in node.log_text("worker")
