"""The one place sockets are made: each role's type, bind/connect side, high-water marks,
linger and CurveZMQ keys come from the settings here, so no socket is configured twice.

ipc endpoints: the socket folder must belong to this user (or root) and be writable by nobody
else, since whoever can write there can replace a socket and read or forge the node's messages;
a missing folder is created 0700. The socket files a factory bound are removed when it closes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import TransportError
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
        self._bound_ipc: list[tuple[Path, int, int]] = []  # (path, st_dev, st_ino) of the socket files bound
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
        try:
            self._secure(sock, role, endpoint)
            if role.bind:
                self._check_exposure(role_name, endpoint)
            check_ipc_folder(endpoint, create=role.bind)
            if role.bind:
                sock.bind(endpoint)
                self._remember_ipc(endpoint)
            else:
                sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            side = "bind" if role.bind else "connect"
            raise TransportError(f"cannot {side} {role_name} socket on {endpoint}: {exc}") from None
        except BaseException:
            sock.close(0)
            raise
        self._sockets.append(sock)
        return sock

    def _remember_ipc(self, endpoint: str) -> None:
        path = _ipc_path(endpoint)
        if path is not None:
            try:
                info = path.lstat()
            except OSError:
                return
            self._bound_ipc.append((path, info.st_dev, info.st_ino))

    def _secure(self, sock: zmq.Socket, role: Role, endpoint: str) -> None:
        sec = self.settings.security
        if not sec.curve or not endpoint.startswith("tcp://"):
            return  # ipc/inproc stay on this host; file permissions guard them
        if role.server:
            if sec.server_secret_key is None:
                raise TransportError(f"security.curve is on but security.server_secret_key is not set for {endpoint}")
            public, secret = _load_certificate(sec.server_secret_key, "server_secret_key")
            self._start_auth(endpoint)
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        else:
            if sec.client_secret_key is None or sec.server_public_key is None:
                raise TransportError("security.curve is on: a client needs client_secret_key and server_public_key")
            public, secret = _load_certificate(sec.client_secret_key, "client_secret_key")
            server_public, _ = _load_certificate(sec.server_public_key, "server_public_key")
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_serverkey = server_public

    def _check_exposure(self, role_name: str, endpoint: str) -> None:
        """A plain (no CurveZMQ) bind beyond loopback: a warning, and for the prompt link a refusal unless
        ``security.allow_plain_prompts`` (whoever reaches it could click, or read what it carries)."""
        sec = self.settings.security
        if not endpoint.startswith("tcp://") or is_loopback(endpoint) or sec.curve:
            return
        if role_name == "prompts_server" and not sec.allow_plain_prompts:
            raise TransportError(f"the prompt link would listen on {endpoint} without CurveZMQ: anyone who reaches it "
                                 "could send clicks; turn on security.curve (deploy/multi-host.md) or, on a closed "
                                 "network, set security.allow_plain_prompts")
        log.warning("SECURITY: %s listens on %s without CurveZMQ: anything on that network can connect and read "
                    "or send what it carries (deploy/multi-host.md)", role_name, endpoint)

    def _start_auth(self, endpoint: str) -> None:
        allowed = self.settings.security.authorized_clients_dir
        if allowed is None:
            raise TransportError("security.curve is on: set security.authorized_clients_dir "
                                 "(the folder of allowed client public keys)")
        any_client = str(allowed) == "*"
        if any_client:
            if not is_loopback(endpoint):
                raise TransportError(f"security.authorized_clients_dir = '*' lets any client with any key in; refused "
                                     f"on {endpoint}, which is not a loopback address: list the allowed keys' folder")
            log.warning("SECURITY: authorized_clients_dir = '*' on %s: ANY client key is accepted (encryption without "
                        "an allow-list); acceptable on loopback for tests only", endpoint)
        elif not allowed.is_dir():
            raise TransportError(f"security.authorized_clients_dir {allowed} is not a folder of client public keys")
        if self._auth is not None:
            return
        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        # zmq's CURVE_ALLOW_ANY is the string "*"; anything else is the folder of allowed public keys.
        self._auth.configure_curve(domain="*", location="*" if any_client else str(allowed))

    def close(self) -> None:
        """Close every socket, stop the authenticator, end an own context, then remove the ipc files bound."""
        for sock in self._sockets:
            sock.close(self.settings.sockets.linger_ms)
        self._sockets.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self.context.term()
        for path, dev, ino in self._bound_ipc:
            try:
                info = path.lstat()
                if (info.st_dev, info.st_ino) == (dev, ino) and stat.S_ISSOCK(info.st_mode):
                    path.unlink()  # only our own socket file: a successor may have bound the path meanwhile
            except OSError:
                pass
        self._bound_ipc.clear()

    def __enter__(self) -> SocketFactory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _load_certificate(path: Path, field: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise TransportError(f"security.{field} {path} cannot be read as a zmq certificate: {exc}") from None
    if secret is not None:
        check_secret_file(path, field)
    return public, secret


def check_secret_file(path: Path, field: str) -> None:
    """A secret key readable by anyone but its owner is refused (it would let them pose as this process)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise TransportError(f"security.{field} {path} cannot be checked: {exc}") from None
    if mode & 0o077:
        raise TransportError(f"security.{field} {path} has mode {mode:04o}: a secret key must be readable by its "
                             f"owner alone (chmod 0600 {path})")


def _ipc_path(endpoint: str) -> Path | None:
    if not endpoint.startswith("ipc://") or endpoint.startswith("ipc://@"):  # '@': Linux abstract namespace
        return None
    return Path(endpoint[len("ipc://"):])


def check_ipc_folder(endpoint: str, create: bool = False) -> None:
    """For ipc endpoints: the socket's folder must be writable by its owner alone, and that owner must be this
    user (or root) on the binding side.

    ``create`` (the binding side) makes a missing folder, 0700; a connecting side leaves a missing one to the binder.
    Raises TransportError naming the folder, its owner and mode, or a path that is there but no socket."""
    path = _ipc_path(endpoint)
    if path is None:
        return
    folder = path.parent
    if create and not folder.exists():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"ipc endpoint {endpoint}: cannot create socket folder {folder}: {exc}") from None
    try:
        info = folder.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TransportError(f"ipc endpoint {endpoint}: socket folder {folder} cannot be checked: {exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise TransportError(f"ipc endpoint {endpoint}: {folder} is not a folder")
    # The binder must own the folder; a connecting console (e.g. another user in the node's group) only needs
    # to know that no one but the folder's owner can plant a socket there.
    if (create and info.st_uid not in (os.getuid(), 0)) or mode & 0o022:
        raise TransportError(f"ipc endpoint {endpoint}: socket folder {folder} is owned by uid {info.st_uid} with mode "
                             f"{mode:04o}; it must be writable by its owner alone (e.g. chmod 0750), and the process "
                             f"that binds there must own it (this is uid {os.getuid()}), since whoever can write there "
                             "can replace the sockets")
    if create and (path.exists() or path.is_symlink()) and not stat.S_ISSOCK(path.lstat().st_mode):
        raise TransportError(f"ipc endpoint {endpoint}: {path} exists and is not a socket")


def is_loopback(endpoint: str) -> bool:
    """Whether a tcp:// endpoint's host is a loopback address (127.0.0.0/8, ::1, localhost); '*' is not."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    if ";" in host:  # 'tcp://source;host:port' connects from a local address: the host is what counts
        host = host.rpartition(";")[2]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
