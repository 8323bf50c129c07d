"""The one place sockets are made: each role's type, bind/connect side, high-water marks,
linger and CurveZMQ keys come from the settings here, so no socket is configured twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Role:
    endpoint: str  # name of the field in settings.endpoints
    kind: int
    bind: bool
    hwm: str  # name of the field in settings.sockets
    server: bool  # the CurveZMQ server side (the binding side) of the link


ROLES: dict[str, Role] = {
    "frames_out": Role("frames", zmq.PUB, True, "frames_hwm", True),
    "frames_in": Role("frames", zmq.SUB, False, "frames_hwm", False),
    "prompts_server": Role("prompts", zmq.ROUTER, True, "prompts_hwm", True),
    "prompts_client": Role("prompts", zmq.DEALER, False, "prompts_hwm", False),
    "results_out": Role("results", zmq.PUSH, False, "results_hwm", False),
    "results_in": Role("results", zmq.PULL, True, "results_hwm", True),
    "broadcast_out": Role("broadcast", zmq.XPUB, True, "broadcast_hwm", True),
    "broadcast_in": Role("broadcast", zmq.SUB, False, "broadcast_hwm", False),
}


class SocketFactory:
    """Makes the sockets of one process from its settings; closes them all on ``close``."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.context = context or zmq.Context()
        self._own_context = context is None
        self._sockets: list[zmq.Socket] = []
        self._auth: ThreadAuthenticator | None = None

    def socket(self, role_name: str, endpoint: str | None = None, subscribe: bytes | None = b"") -> zmq.Socket:
        """Create, configure and bind/connect the socket for ``role_name`` (see ROLES)."""
        role = ROLES[role_name]
        endpoint = endpoint or getattr(self.settings.endpoints, role.endpoint)
        opts = self.settings.sockets
        hwm = getattr(opts, role.hwm)
        sock = self.context.socket(role.kind)
        sock.setsockopt(zmq.LINGER, opts.linger_ms)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, opts.max_message_bytes)
        if role.kind == zmq.XPUB:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every subscription, so late joiners get the cache
        if role.kind in (zmq.DEALER, zmq.PUSH):
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to live peers, so a dead peer reads as "full"
        if role.kind == zmq.SUB and subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe)
        self._secure(sock, role, endpoint)
        try:
            if role.bind:
                _prepare_ipc(endpoint)
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            side = "bind" if role.bind else "connect"
            raise RuntimeError(f"cannot {side} {role_name} socket on {endpoint}: {exc}") from None
        self._sockets.append(sock)
        return sock

    def _secure(self, sock: zmq.Socket, role: Role, endpoint: str) -> None:
        sec = self.settings.security
        if not sec.curve or not endpoint.startswith("tcp://"):
            return  # ipc/inproc stay on this host; file permissions guard them
        if role.server:
            if sec.server_secret_key is None:
                raise RuntimeError(f"security.curve is on but security.server_secret_key is not set for {endpoint}")
            public, secret = zmq.auth.load_certificate(str(sec.server_secret_key))
            self._start_auth()
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        else:
            if sec.client_secret_key is None or sec.server_public_key is None:
                raise RuntimeError("security.curve is on: a client needs client_secret_key and server_public_key")
            public, secret = zmq.auth.load_certificate(str(sec.client_secret_key))
            server_public, _ = zmq.auth.load_certificate(str(sec.server_public_key))
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_serverkey = server_public

    def _start_auth(self) -> None:
        if self._auth is not None:
            return
        allowed = self.settings.security.authorized_clients_dir
        if allowed is None:
            raise RuntimeError("security.curve is on: set security.authorized_clients_dir (the client key allow-list)")
        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(allowed))

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(self.settings.sockets.linger_ms)
        self._sockets.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self.context.term()

    def __enter__(self) -> "SocketFactory":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _prepare_ipc(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_socket():
            raise RuntimeError(f"ipc endpoint {endpoint}: {path} exists and is not a socket")


def send_nowait(sock: zmq.Socket, parts: list[Any]) -> bool:
    """Send without blocking; False (and nothing queued) when the peer's buffer is full or absent."""
    try:
        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False


def drain(sock: zmq.Socket, limit: int = 1000) -> Iterator[list[Any]]:
    """Every message already waiting on ``sock`` (at most ``limit``, so one busy link cannot starve the others)."""
    for _ in range(limit):
        try:
            yield sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
