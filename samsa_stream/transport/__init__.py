"""How bytes move between processes (ZeroMQ sockets). What they mean lives in ``protocol``."""

from .sockets import ROLES, SocketFactory, send_nowait

__all__ = ["ROLES", "SocketFactory", "send_nowait"]
