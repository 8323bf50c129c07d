"""How bytes move between processes (ZeroMQ sockets, shared memory, in-process mailboxes).
What they mean lives in ``protocol``."""

from .link import (
    FrameLink,
    FrameReceiver,
    FrameSender,
    InProcessLink,
    InProcessResultSink,
    ResultSink,
    SocketFrameLink,
    SocketResultSink,
    frame_link,
    same_host,
    uses_shared_memory,
)
from .loop import PollLoop
from .mailbox import Mailbox
from .shm import ShmReader, ShmRef, ShmWriter, SlotLapped
from .sockets import ROLES, SocketFactory, drain, send_nowait

__all__ = ["FrameLink", "FrameReceiver", "FrameSender", "InProcessLink", "InProcessResultSink", "Mailbox", "PollLoop",
           "ROLES", "ResultSink", "ShmReader", "ShmRef", "ShmWriter", "SlotLapped", "SocketFactory",
           "SocketFrameLink", "SocketResultSink", "drain", "frame_link", "same_host", "send_nowait",
           "uses_shared_memory"]
