"""The project's one exception hierarchy.

Every error raised on purpose for bad input, bad settings or an unusable environment derives
from ``SamsaError``: the CLI turns those into a one-line message and an exit code, while any
other exception is a programming error and keeps its traceback.
"""

from __future__ import annotations


class SamsaError(Exception):
    """Base of every error samsa-stream raises on purpose; the text says what was wrong."""


class ProtocolError(SamsaError, ValueError):
    """A message that does not follow docs/protocol.md; the text says what is wrong.

    ``request_id`` is set when the message was a prompt request whose id could still be read,
    so the reply can carry it back to the console that is waiting for it.
    """

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class TransportError(SamsaError, RuntimeError):
    """A link that cannot be set up: an endpoint that cannot be bound, missing keys, an unsafe folder."""


class CommandError(SamsaError, RuntimeError):
    """A command that cannot do what was asked (bad argument, no screen, worker not answering)."""


__all__ = ["CommandError", "ProtocolError", "SamsaError", "TransportError"]
