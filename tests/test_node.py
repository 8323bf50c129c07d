"""The local node's private endpoints: every link gets its own address."""

from __future__ import annotations

from pathlib import Path

from samsa_stream.node import free_tcp_ports, private_endpoints


def test_free_ports_are_distinct_because_they_are_held_together() -> None:
    ports = free_tcp_ports(64)
    assert len(set(ports)) == 64 and all(1024 <= p <= 65535 for p in ports)


def test_each_link_of_a_tcp_node_has_its_own_port(tmp_path: Path) -> None:
    """Ports picked one at a time could repeat (the kernel reuses a just-closed one), and then two
    processes bound the same address: seen once as a worker whose results went to its own prompt socket."""
    for _ in range(200):
        endpoints = private_endpoints("tcp", tmp_path)
        assert len(set(endpoints.values())) == len(endpoints) == 4, endpoints


def test_ipc_endpoints_lie_in_the_given_folder(tmp_path: Path) -> None:
    endpoints = private_endpoints("ipc", tmp_path)
    assert endpoints == {n: f"ipc://{tmp_path}/{n}" for n in ("frames", "prompts", "results", "broadcast")}
