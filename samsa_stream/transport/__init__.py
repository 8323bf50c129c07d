"""How bytes move between processes (ZeroMQ sockets). What they mean lives in ``protocol``."""

from .loop import PollLoop
from .shm import ShmReader, ShmRef, ShmWriter
from .sockets import ROLES, SocketFactory, drain, send_nowait


def uses_shared_memory(mode: str, endpoint: str) -> bool:
    """Whether frames on ``endpoint`` pass through shared memory (``mode``: auto, on, off)."""
    return mode == "on" or (mode == "auto" and endpoint.startswith(("ipc://", "inproc://")))


__all__ = ["PollLoop", "ROLES", "ShmReader", "ShmRef", "ShmWriter", "SocketFactory", "drain", "send_nowait", "uses_shared_memory"]
