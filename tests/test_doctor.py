"""samsa-stream doctor: a pass/warn table that exits 0 on this machine, 1 when something would stop the node."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import zmq.auth

from samsa_stream.cli import main
from samsa_stream.commands.doctor import check_checkpoint, check_endpoints, check_keys, probe_tcp
from samsa_stream.settings import load_settings
from samsa_stream.worker.engines.sam2_model import SAM21_KEY, TRUNK_KEY


def _statuses(out: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(out)["checks"]}


def test_default_settings_pass_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("PASS  python") and "package zmq" in out and "endpoint frames" in out
    assert all(line.split()[0] in ("PASS", "WARN") for line in lines[:-1]), out
    assert lines[-1].endswith(("ready", "ready (see warnings)"))


def test_a_missing_checkpoint_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "sam2.1_hiera_tiny.pt"
    assert main(["doctor", "--json", "--set", "worker.engine=rgb", "--checkpoint", str(missing)]) == 1
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ok"] is False
    assert _statuses(out)["checkpoint"] == "fail"
    assert "does not exist" in next(c["detail"] for c in report["checks"] if c["name"] == "checkpoint")


def _fake_checkpoint(path: Path) -> Path:
    """The tensors the variant is read from (SAM2.1 tiny: trunk width 96, 12 blocks), not a whole model."""
    state = {TRUNK_KEY: torch.zeros(96, 3, 7, 7), SAM21_KEY: torch.zeros(1, 64),
             **{f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)}}
    torch.save({"model": state}, path)
    return path


def test_the_checkpoint_variant_is_read_and_checked_against_its_name(tmp_path: Path) -> None:
    settings = load_settings(overrides={"worker": {"engine": "rgb"}})
    settings.worker.checkpoint = _fake_checkpoint(tmp_path / "sam2.1_hiera_tiny.pt")
    [check] = check_checkpoint(settings)
    assert check.status == "pass" and "sam2.1_hiera_tiny" in check.detail
    settings.worker.checkpoint = _fake_checkpoint(tmp_path / "sam2.1_hiera_large.pt")
    [check] = check_checkpoint(settings)
    assert check.status == "fail" and "named sam2.1_hiera_large" in check.detail
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    settings.worker.checkpoint = tmp_path / "junk.pt"
    assert check_checkpoint(settings)[0].status == "fail"


def test_an_endpoint_in_use_is_a_warning_and_a_free_one_passes() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert probe_tcp("127.0.0.1", port) == "in use"
        settings = load_settings(overrides={"endpoints": {"results": f"tcp://127.0.0.1:{port}"}})
        checks = {c.name: c for c in check_endpoints(settings)}
        assert checks["endpoint results"].status == "warn" and "in use" in checks["endpoint results"].detail
    assert probe_tcp("127.0.0.1", port) == "free"
    assert probe_tcp("192.0.2.1", port) == "remote"  # TEST-NET-1: never an address of this host


def test_an_ipc_folder_others_can_write_fails(tmp_path: Path) -> None:
    folder = tmp_path / "sockets"
    folder.mkdir()
    folder.chmod(0o777)
    settings = load_settings(overrides={"endpoints": {"frames": f"ipc://{folder}/frames"}})
    checks = {c.name: c for c in check_endpoints(settings)}
    assert checks["endpoint frames"].status == "fail" and "0777" in checks["endpoint frames"].detail
    folder.chmod(0o750)
    assert {c.name: c for c in check_endpoints(settings)}["endpoint frames"].status == "pass"


def test_a_secret_key_others_can_read_fails(tmp_path: Path) -> None:
    _, secret = zmq.auth.create_certificates(str(tmp_path), "server")
    allowed = tmp_path / "clients"
    allowed.mkdir()
    settings = load_settings(overrides={"security": {"curve": True, "server_secret_key": secret,
                                                     "authorized_clients_dir": str(allowed)}})
    Path(secret).chmod(0o644)
    checks = {c.name: c for c in check_keys(settings)}
    assert checks["key server_secret_key"].status == "fail" and "chmod 0600" in checks["key server_secret_key"].detail
    Path(secret).chmod(0o600)
    checks = {c.name: c for c in check_keys(settings)}
    assert checks["key server_secret_key"].status == "pass"
    assert checks["authorized clients"].status == "warn"  # an empty allow-list lets no console in
