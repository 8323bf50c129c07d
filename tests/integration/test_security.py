"""CurveZMQ on tcp links: encrypted, and only consoles on the allow-list get answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from samsa_stream.display.console import PromptConsole, PromptTimeout
from samsa_stream.node import LocalNode, free_tcp_port
from samsa_stream.settings import load_settings
from tests.integration.conftest import console_for


def make_keys(folder: Path, name: str) -> None:
    subprocess.run([sys.executable, "-m", "samsa_stream", "keys", str(folder), "--name", name], check=True,
                   capture_output=True)


def test_only_authorised_consoles_are_answered(tmp_path: Path) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("node", "console", "intruder"):
        make_keys(keys, name)
    allowed.mkdir()
    for name in ("node", "console"):
        (allowed / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    security = {"curve": True, "server_secret_key": str(keys / "node.key_secret"),
                "client_secret_key": str(keys / "node.key_secret"), "server_public_key": str(keys / "node.key"),
                "authorized_clients_dir": str(allowed)}
    with LocalNode({"security": security}, transport="tcp", run_dir=tmp_path) as node:
        node.start("worker")
        endpoints = node.settings.endpoints.model_dump()

        def console(client_key: str | None) -> PromptConsole:
            sec = {"curve": False} if client_key is None else {**security, "client_secret_key": client_key}
            return PromptConsole(load_settings(overrides={"endpoints": endpoints, "security": sec}), "cam0")

        good = console_for(node)  # node settings: the node's own key, which is on the allow-list
        good.close()
        authorised = console(str(keys / "console.key_secret"))
        assert authorised.request("status").ok
        authorised.close()
        for key in (str(keys / "intruder.key_secret"), None):
            stranger = console(key)
            with pytest.raises(PromptTimeout):
                stranger.request("status", timeout_ms=1500)
            stranger.close()
        assert "Traceback" not in node.log_text("worker")


def test_keys_command_refuses_to_overwrite(tmp_path: Path) -> None:
    make_keys(tmp_path, "node")
    proc = subprocess.run([sys.executable, "-m", "samsa_stream", "keys", str(tmp_path), "--name", "node"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "exists already" in proc.stderr


def test_curve_without_keys_is_a_settings_error() -> None:
    from samsa_stream.settings import SettingsError

    with pytest.raises(SettingsError, match="security"):
        load_settings(overrides={"security": {"curve": True}})


def _allow_any(tmp_path: Path, prompts: str | None = None) -> LocalNode:
    keys = tmp_path / "keys"
    make_keys(keys, "node")
    security = {"curve": True, "server_secret_key": str(keys / "node.key_secret"),
                "client_secret_key": str(keys / "node.key_secret"), "server_public_key": str(keys / "node.key"),
                "authorized_clients_dir": "*"}
    overrides: dict = {"security": security}
    if prompts is not None:
        overrides["endpoints"] = {"prompts": prompts}
    return LocalNode(overrides, transport="tcp", run_dir=tmp_path)


def test_allow_any_client_is_refused_on_a_link_that_leaves_the_host(tmp_path: Path) -> None:
    with _allow_any(tmp_path, prompts=f"tcp://0.0.0.0:{free_tcp_port()}") as node:
        node.start("worker")
        assert node.wait("worker", timeout=30) == 1, node.log_text("worker")[-2000:]
        text = node.log_text("worker")
        assert "authorized_clients_dir = '*'" in text and "not a loopback address" in text
        assert "Traceback" not in text


def test_allow_any_client_on_loopback_works_and_says_so_loudly(tmp_path: Path) -> None:
    with _allow_any(tmp_path) as node:
        node.start("worker")
        console = console_for(node)
        try:
            assert console.request("status").ok
        finally:
            console.close()
        assert "ANY client key is accepted" in node.log_text("worker")
