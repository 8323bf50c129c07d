"""The OpenIGTLink TCP server: any number of clients (up to ``max_clients``), none able to hold up another.

pyigtl's own ``OpenIGTLinkServer`` is not used: it serves one connection at a time from one shared
send queue, its ``send_message`` can wait for ever when no client reads, and it replaces the
process's SIGTERM handler. Here pyigtl only packs the messages; this module moves the bytes.

Each client has its own thread and its own pending messages, at most one per (type, device): a
newer message of the same device replaces one not yet sent (counted ``messages_superseded``), so
a slow client gets the newest label map, never a growing backlog. A client that takes longer
than ``stall_timeout_s`` to accept one message is dropped (``clients_stalled``); one that closes
its end is removed (``clients_disconnected``). Whatever a client sends is read and ignored.
Counters change only in the calling thread (``accept``, ``send``, ``reap``), never in a client's.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from typing import Any

from ..errors import TransportError
from ..runtime import ProcessStats

log = logging.getLogger(__name__)

STALL_TIMEOUT_S = 5.0  # a navigation display that cannot take one frame in this long is not watching
MAX_CLIENTS = 16
_IDLE_WAKE_S = 0.1  # how often an idle client thread looks whether its client hung up
_READ_CHUNK = 65536

Key = tuple[str, str]  # (message type, device name): one pending message each


class IgtlClient:
    """One connected client: a thread that sends its pending messages in order."""

    def __init__(self, sock: socket.socket, address: str, stall_timeout_s: float) -> None:
        self.sock, self.address, self.stall_timeout_s = sock, address, stall_timeout_s
        self.reason: str | None = None  # why it ended: set once by its thread (or by close)
        self.stalled = False
        self.sent = 0
        self._pending: dict[Key, bytes] = {}
        self._cond = threading.Condition()
        self._closing = False
        self.sock.settimeout(stall_timeout_s)
        self.thread = threading.Thread(target=self._run, name=f"igtl-client-{address}", daemon=True)
        self.thread.start()

    def offer(self, key: Key, data: bytes) -> bool:
        """Queue ``data``; True when it replaced a message of the same key that had not gone out yet."""
        with self._cond:
            replaced = self._pending.pop(key, None) is not None
            self._pending[key] = data
            self._cond.notify()
        return replaced

    @property
    def ended(self) -> bool:
        return self.reason is not None or not self.thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._pending and not self._closing:
                        self._cond.wait(_IDLE_WAKE_S)
                    if self._closing:
                        return
                    data = self._pending.pop(next(iter(self._pending))) if self._pending else None
                if not self._read_incoming():
                    self._end("closed the connection")
                    return
                if data is not None:
                    self.sock.sendall(data)  # the socket's timeout bounds the whole call (Python >= 3.5)
                    self.sent += 1
        except TimeoutError:
            self.stalled = True
            self._end(f"stalled: did not take a message within {self.stall_timeout_s:.1f} s")
        except OSError as exc:
            self._end(f"connection lost: {exc}")
        finally:
            self.sock.close()

    def _read_incoming(self) -> bool:
        """Read and drop what the client sent; False once it has closed its end."""
        while select.select([self.sock], [], [], 0)[0]:
            if not self.sock.recv(_READ_CHUNK):
                return False
        return True

    def _end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def close(self) -> None:
        """Stop the thread now, even one blocked in a send."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._end("closed by the server")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked sendall
        except OSError:
            pass
        self.thread.join(timeout=1.0)


class IgtlServer:
    """Listens on ``port`` (0: any free port, see ``port``) on loopback, or every interface unless
    ``local_only``. Call ``accept`` when ``listener`` is readable and ``reap`` now and then."""

    def __init__(self, port: int, local_only: bool, stats: ProcessStats, stall_timeout_s: float = STALL_TIMEOUT_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.stats, self.stall_timeout_s, self.max_clients = stats, stall_timeout_s, max_clients
        self.host = "127.0.0.1" if local_only else "0.0.0.0"
        try:
            self.listener = socket.create_server((self.host, port))
        except OSError as exc:
            raise TransportError(f"cannot listen for OpenIGTLink clients on {self.host}:{port} "
                                 f"(igtl.port, igtl.local_only): {exc}") from None
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self._clients: list[IgtlClient] = []

    @property
    def clients(self) -> int:
        """Clients connected and not yet found gone."""
        return sum(1 for c in self._clients if not c.ended)

    def accept(self) -> list[IgtlClient]:
        """Take every waiting connection; those beyond ``max_clients`` are closed (``clients_refused``)."""
        new: list[IgtlClient] = []
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return new
            except OSError as exc:  # e.g. out of file descriptors: the listener stays, the client goes
                self.stats.error("clients_refused", f"accepting an OpenIGTLink client failed: {exc}")
                return new
            address = f"{peer[0]}:{peer[1]}"
            self.reap()
            if len(self._clients) >= self.max_clients:
                sock.close()
                self.stats.error("clients_refused", f"OpenIGTLink client {address} refused: "
                                                    f"{self.max_clients} clients already connected")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = IgtlClient(sock, address, self.stall_timeout_s)
            self._clients.append(client)
            new.append(client)
            self.stats.count("clients_connected")
            log.info("OpenIGTLink client %s connected (%d now)", address, self.clients)

    def send(self, key: Key, data: bytes, to: list[IgtlClient] | None = None) -> int:
        """Queue ``data`` for every client (or those in ``to``); returns how many it was queued for."""
        targets = [c for c in (self._clients if to is None else to) if not c.ended]
        for client in targets:
            if client.offer(key, data):
                self.stats.count("messages_superseded")  # that client was slower than the stream
        return len(targets)

    def reap(self) -> None:
        """Remove clients whose connection ended, counting why."""
        for client in [c for c in self._clients if c.ended]:
            self._clients.remove(client)
            self.stats.count("clients_stalled" if client.stalled else "clients_disconnected")
            log.info("OpenIGTLink client %s %s after %d message(s) (%d left)", client.address,
                     client.reason or "ended", client.sent, self.clients)

    def close(self) -> None:
        """Close every connection and the listener (clients still connected are not counted as lost)."""
        self.reap()
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.listener.close()

    def __enter__(self) -> IgtlServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["MAX_CLIENTS", "STALL_TIMEOUT_S", "IgtlClient", "IgtlServer"]
