"""CurveZMQ with an allow-list on every link that can leave the host: a peer whose key is not allowed
receives no cube and no mask, and its results never arrive (the prompt link: tests/integration/test_security.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from samsa_stream.node import free_tcp_port
from samsa_stream.settings import Settings, load_settings
from samsa_stream.transport import SocketFactory

DEADLINE_S = 20.0


def key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    out = {"node": key_pair(tmp_path / "node", "node"), "allowed": key_pair(tmp_path / "clients", "allowed"),
           "stranger": key_pair(tmp_path / "strangers", "stranger")}
    (tmp_path / "allowed").mkdir()
    out["allowed"][0].rename(tmp_path / "allowed" / out["allowed"][0].name)
    out["allowed"] = (tmp_path / "allowed" / out["allowed"][0].name, out["allowed"][1])
    return out


def settings_for(keys: dict[str, tuple[Path, Path]], who: str, link: str, endpoint: str) -> Settings:
    node_public, node_secret = keys["node"]
    security: dict[str, object] = {"curve": True}
    if who == "node":
        security.update(server_secret_key=str(node_secret), authorized_clients_dir=str(keys["allowed"][0].parent))
    else:
        security.update(client_secret_key=str(keys[who][1]), server_public_key=str(node_public))
    return load_settings(overrides={"endpoints": {link: endpoint}, "security": security})


@pytest.mark.parametrize("server_role, client_role, link", [
    ("frames_out", "frames_in", "frames"),
    ("broadcast_out", "broadcast_in", "broadcast"),
])
def test_only_an_allowed_key_receives(keys, server_role: str, client_role: str, link: str) -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with SocketFactory(settings_for(keys, "node", link, endpoint)) as node, \
            SocketFactory(settings_for(keys, "allowed", link, endpoint)) as friend, \
            SocketFactory(settings_for(keys, "stranger", link, endpoint)) as stranger:
        sender = node.socket(server_role)
        allowed = friend.socket(client_role)
        refused = stranger.socket(client_role)
        got_allowed, got_refused, sent = 0, 0, 0
        deadline = time.monotonic() + DEADLINE_S
        while got_allowed < 20 and time.monotonic() < deadline:
            sender.send_multipart([f"{link}/cam0/".encode(), b"%d" % sent])
            sent += 1
            if allowed.poll(20):
                got_allowed += len(allowed.recv_multipart())
            while refused.poll(0):
                refused.recv_multipart()
                got_refused += 1
        assert got_allowed >= 20, f"the allowed peer got {got_allowed} of {sent} messages"
        assert got_refused == 0, f"a peer without an allowed key received {got_refused} messages"


def test_results_from_a_key_not_allowed_never_arrive(keys) -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with SocketFactory(settings_for(keys, "node", "results", endpoint)) as node, \
            SocketFactory(settings_for(keys, "allowed", "results", endpoint)) as friend, \
            SocketFactory(settings_for(keys, "stranger", "results", endpoint)) as stranger:
        puller = node.socket("results_in")
        allowed = friend.socket("results_out")
        refused = stranger.socket("results_out")
        senders: list[bytes] = []
        deadline = time.monotonic() + DEADLINE_S
        while senders.count(b"allowed") < 20 and time.monotonic() < deadline:
            for sock, name in ((allowed, b"allowed"), (refused, b"stranger")):
                try:
                    sock.send_multipart([name], zmq.NOBLOCK)
                except zmq.Again:
                    pass  # IMMEDIATE: no completed (authenticated) connection, nothing queued
            while puller.poll(10):
                senders.append(puller.recv_multipart()[0])
        assert senders.count(b"allowed") >= 20 and b"stranger" not in senders, senders[-5:]
