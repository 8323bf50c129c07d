"""Runs the node's processes (ingest, worker, publisher, view) as separate OS processes on one
machine, wired to private endpoints: what ``demo`` uses, and what integration tests drive."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import CommandError
from .settings import CONFIG_ENV, Settings, load_settings


def free_tcp_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all held open together while they are picked,
    so the kernel cannot hand the same port out twice)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def free_tcp_port() -> int:
    return free_tcp_ports(1)[0]


def private_endpoints(transport: str, folder: Path) -> dict[str, str]:
    """Endpoints no other node on the machine uses: ipc sockets in ``folder`` or free loopback ports."""
    names = ("frames", "prompts", "results", "broadcast")
    if transport == "ipc":
        return {n: f"ipc://{folder}/{n}" for n in names}
    if transport == "tcp":
        return {n: f"tcp://127.0.0.1:{port}" for n, port in zip(names, free_tcp_ports(len(names)), strict=True)}
    raise CommandError(f"transport must be 'ipc' or 'tcp', got {transport!r}")


def flatten_env(tree: dict[str, Any], prefix: str = "SAMSA_") -> dict[str, str]:
    """Nested settings overrides -> SAMSA_SECTION__FIELD environment variables."""
    env: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            env.update(flatten_env(value, name + "__"))
        elif isinstance(value, list | tuple):
            env[name] = json.dumps(list(value))  # lists travel as JSON, as pydantic-settings reads them
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class LocalNode:
    """The processes of one node on this machine. Use as a context manager: every process it
    started is stopped (SIGTERM, then SIGKILL after a grace period) and its sockets removed."""

    def __init__(self, overrides: dict[str, Any] | None = None, transport: str = "ipc", run_dir: Path | None = None,
                 log_dir: Path | None = None, config: Path | None = None) -> None:
        """``overrides`` (nested, as from the command line) win over the TOML ``config`` file."""
        # ipc paths must stay short (about 100 bytes), so sockets live in their own /tmp folder.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="samsa-", dir="/tmp"))
        self.run_dir = run_dir or self._sock_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir or self.run_dir
        self.overrides: dict[str, Any] = dict(overrides or {})
        endpoints = private_endpoints(transport, self._sock_dir)
        self.overrides["endpoints"] = {**endpoints, **self.overrides.get("endpoints", {})}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SAMSA_")}
        self.env = {**inherited, **flatten_env(self.overrides)}
        self.env["PYTHONUNBUFFERED"] = "1"
        if config is not None:
            self.env[CONFIG_ENV] = str(config)
        self.settings: Settings = load_settings(config, self.overrides)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    def stats_path(self, name: str) -> Path:
        return self.run_dir / f"stats_{name}.json"

    def start(self, name: str, *args: str, key: str | None = None) -> subprocess.Popen[bytes]:
        """Start process ``name`` (ingest, worker, publisher, view) with extra CLI ``args``; ``key`` names
        it for ``stop``/``kill``/``stats``/``log_text`` when one node runs two of a kind (default ``name``)."""
        key = key or name
        if key in self.procs and self.procs[key].poll() is None:
            raise CommandError(f"{key} is already running")
        self.stats_path(key).unlink(missing_ok=True)
        log = (self.log_dir / f"{key}.log").open("ab")
        self._logs[key] = log
        cmd = [sys.executable, "-m", "samsa_stream", name, "--stats-file", str(self.stats_path(key)), *args]
        self.procs[key] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
        return self.procs[key]

    def running(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def wait(self, name: str, timeout: float) -> int | None:
        """Exit code of ``name`` once it ends by itself, or None if it is still running at ``timeout``."""
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, name: str, grace_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        return int(proc.returncode)

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        self.procs[name].kill()
        self.procs[name].wait()

    def stats(self, name: str) -> dict[str, Any]:
        path = self.stats_path(name)
        return json.loads(path.read_text()) if path.exists() else {}

    def log_text(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


__all__ = ["LocalNode", "flatten_env", "free_tcp_port", "free_tcp_ports", "private_endpoints", "wait_until"]
