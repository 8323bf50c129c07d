"""The socket factory: ipc folders that are safe to use, socket files removed on close, CurveZMQ settings
that cannot silently let anyone in, and TransportError for every link that cannot be set up."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import zmq.auth

from samsa_stream.errors import TransportError
from samsa_stream.node import free_tcp_port
from samsa_stream.settings import load_settings
from samsa_stream.transport import SocketFactory
from samsa_stream.transport.sockets import check_ipc_folder, is_loopback


def factory_for(**endpoints: str) -> SocketFactory:
    return SocketFactory(load_settings(overrides={"endpoints": endpoints}))


def test_ipc_socket_files_are_removed_on_close(tmp_path: Path) -> None:
    folder = tmp_path / "sockets"
    factory = factory_for(prompts=f"ipc://{folder}/prompts", results=f"ipc://{folder}/results")
    factory.socket("prompts_server")
    factory.socket("results_in")
    assert stat.S_ISSOCK((folder / "prompts").lstat().st_mode)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # made private when missing
    factory.close()
    assert not (folder / "prompts").exists() and not (folder / "results").exists()


def test_a_socket_file_bound_by_a_successor_is_left_alone(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/prompts"
    first = factory_for(prompts=endpoint)
    first.socket("prompts_server")
    (tmp_path / "prompts").unlink()  # as a restarted process binding the same path would leave it
    second = factory_for(prompts=endpoint)
    second.socket("prompts_server")
    first.close()
    assert (tmp_path / "prompts").exists()
    second.close()
    assert not (tmp_path / "prompts").exists()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    for role, create in (("prompts_server", True), ("prompts_client", False)):
        factory = factory_for(prompts=f"ipc://{folder}/prompts")
        with pytest.raises(TransportError, match=f"{folder}.*mode {mode:04o}"):
            factory.socket(role)
        factory.close()
        with pytest.raises(TransportError, match="writable by its owner alone"):
            check_ipc_folder(f"ipc://{folder}/prompts", create=create)
    assert not (folder / "prompts").exists()


def test_a_folder_of_another_user_is_refused_to_the_binder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(folder, 4242, -1)  # root can hand it to someone else
        owner = 4242
    else:
        owner = folder.stat().st_uid
        monkeypatch.setattr(os, "getuid", lambda: owner + 4242)  # as seen by a process of another user
    with pytest.raises(TransportError, match=f"owned by uid {owner} with mode 0700"):
        check_ipc_folder(f"ipc://{folder}/frames", create=True)
    check_ipc_folder(f"ipc://{folder}/frames", create=False)  # a console of another user may connect there


def test_a_path_that_is_no_socket_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "prompts").write_text("precious")
    factory = factory_for(prompts=f"ipc://{tmp_path}/prompts")
    with pytest.raises(TransportError, match="not a socket"):
        factory.socket("prompts_server")
    factory.close()
    assert (tmp_path / "prompts").read_text() == "precious"


def test_bind_failures_are_transport_errors() -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with factory_for(prompts=endpoint) as factory:
        factory.socket("prompts_server")
        with pytest.raises(TransportError, match=f"cannot bind prompts_server socket on {endpoint}"):
            factory.socket("prompts_server")


@pytest.mark.parametrize("endpoint, loopback", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.3.2.1:5555", True), ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True), ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False),
    ("tcp://10.0.0.2:5555", False), ("tcp://eth0:5555", False), ("tcp://127.0.0.1:5555;10.0.0.1:5555", False),
    ("tcp://gpu-server:5555", False), ("ipc:///tmp/x", False),
])
def test_loopback_endpoints(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def _curve(tmp_path: Path, allowed: str, endpoint: str) -> SocketFactory:
    public, secret = zmq.auth.create_certificates(str(tmp_path), "node")
    Path(secret).chmod(0o600)  # as `samsa-stream keys` writes it
    security = {"curve": True, "server_secret_key": secret, "client_secret_key": secret, "server_public_key": public,
                "authorized_clients_dir": allowed}
    return SocketFactory(load_settings(overrides={"endpoints": {"prompts": endpoint}, "security": security}))


def test_allow_any_client_is_refused_beyond_loopback(tmp_path: Path) -> None:
    factory = _curve(tmp_path, "*", f"tcp://*:{free_tcp_port()}")
    with pytest.raises(TransportError, match="not a loopback address"):
        factory.socket("prompts_server")
    factory.close()


def test_allow_any_client_on_loopback_is_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), _curve(tmp_path, "*", f"tcp://127.0.0.1:{free_tcp_port()}") as factory:
        factory.socket("prompts_server")
    assert any("ANY client key is accepted" in r.getMessage() for r in caplog.records)


def test_missing_allow_list_and_unreadable_keys_are_transport_errors(tmp_path: Path) -> None:
    factory = _curve(tmp_path, str(tmp_path / "nothing-here"), f"tcp://127.0.0.1:{free_tcp_port()}")
    with pytest.raises(TransportError, match="not a folder of client public keys"):
        factory.socket("prompts_server")
    factory.close()
    settings = load_settings(overrides={"security": {"curve": True, "client_secret_key": str(tmp_path / "none"),
                                                     "server_public_key": str(tmp_path / "none.key")}})
    with SocketFactory(settings) as factory, pytest.raises(TransportError, match="cannot be read"):
        factory.socket("prompts_client", f"tcp://127.0.0.1:{free_tcp_port()}")


def test_a_secret_key_others_can_read_is_refused(tmp_path: Path) -> None:
    factory = _curve(tmp_path, str(tmp_path), f"tcp://127.0.0.1:{free_tcp_port()}")
    (tmp_path / "node.key_secret").chmod(0o640)
    with pytest.raises(TransportError, match=r"has mode 0640: a secret key must be readable by its owner alone"):
        factory.socket("prompts_server")
    factory.close()


def test_a_plain_prompt_link_beyond_loopback_is_refused_and_other_links_warn(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_tcp_port()
    exposed = load_settings(overrides={"endpoints": {"prompts": f"tcp://0.0.0.0:{port}",
                                                     "broadcast": f"tcp://0.0.0.0:{free_tcp_port()}"}})
    with SocketFactory(exposed) as factory:
        with pytest.raises(TransportError, match="without CurveZMQ: anyone who reaches it could send clicks"):
            factory.socket("prompts_server")
        with caplog.at_level(logging.WARNING):
            factory.socket("broadcast_out")
    assert any("broadcast_out listens on" in r.getMessage() and "without CurveZMQ" in r.getMessage()
               for r in caplog.records)
    allowed = exposed.model_copy(update={"security": exposed.security.model_copy(
        update={"allow_plain_prompts": True})})
    with SocketFactory(allowed) as factory:
        factory.socket("prompts_server")  # explicitly allowed: binds (with the warning)
    loopback = load_settings(overrides={"endpoints": {"prompts": f"tcp://127.0.0.1:{port}"}})
    caplog.clear()
    with SocketFactory(loopback) as factory, caplog.at_level(logging.WARNING):
        factory.socket("prompts_server")
    assert not any("without CurveZMQ" in r.getMessage() for r in caplog.records)
