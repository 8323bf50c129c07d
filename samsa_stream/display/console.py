"""A prompt console: sends clicks and other prompt requests to the worker, waits for the reply."""

from __future__ import annotations

import itertools

import zmq

from ..errors import SamsaError
from ..protocol import PROMPTS, PromptReply, ProtocolError, StreamPrompt
from ..settings import Settings
from ..transport import SocketFactory


class PromptTimeout(SamsaError, TimeoutError):
    """The worker did not answer in time (down, restarting or unreachable)."""


class PromptConsole:
    """Request/reply over a DEALER socket; a lost reply never wedges the console."""

    def __init__(self, settings: Settings, stream_id: str, sockets: SocketFactory | None = None) -> None:
        self.settings = settings
        self.stream_id = stream_id
        self._own = sockets is None
        self.sockets = sockets or SocketFactory(settings)
        # With several workers, the one that serves this stream (endpoints.prompts_by_stream).
        self.sock = self.sockets.socket("prompts_client", settings.endpoints.prompts_for(stream_id))
        self._ids = itertools.count(1)

    def request(self, op: str, timeout_ms: int | None = None, **fields: object) -> PromptReply:
        """Send one request and return the worker's reply (``ok`` False with ``error`` when it refused)."""
        kind = PROMPTS.get(op)
        if kind is None:
            raise ProtocolError(f"unknown prompt op {op!r} (expected one of {', '.join(PROMPTS)})")
        if issubclass(kind, StreamPrompt):
            fields.setdefault("stream_id", self.stream_id)
        req = kind(request_id=next(self._ids), **fields)
        timeout_ms = timeout_ms or self.settings.sockets.reply_timeout_ms
        self.sock.setsockopt(zmq.SNDTIMEO, timeout_ms)  # wait for the connection, not forever
        try:
            self.sock.send_multipart(req.to_parts(), copy=False)
        except zmq.Again:
            raise PromptTimeout(f"worker at {self.settings.endpoints.prompts} is not reachable "
                                f"(no connection within {timeout_ms} ms)") from None
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        remaining = timeout_ms
        while remaining > 0:
            if not poller.poll(min(remaining, 100)):
                remaining -= 100
                continue
            try:
                reply = PromptReply.from_parts(self.sock.recv_multipart())
            except ProtocolError as exc:
                raise PromptTimeout(f"worker sent a malformed reply: {exc}") from None
            if reply.request_id == req.request_id:
                return reply  # earlier replies to timed-out requests are skipped
        raise PromptTimeout(f"no reply from the worker at {self.settings.endpoints.prompts} within {timeout_ms} ms")

    def answers(self, timeout_ms: int = 500) -> bool:
        """Whether the worker replies to a status request within ``timeout_ms``."""
        try:
            return self.request("status", timeout_ms=timeout_ms).ok
        except PromptTimeout:
            return False

    def click(self, object_id: int, x: float, y: float, positive: bool = True, frame_id: int | None = None,
              label: str | None = None) -> PromptReply:
        return self.request("click", object_id=object_id, x=x, y=y, positive=positive, frame_id=frame_id, label=label)

    def close(self) -> None:
        self.sock.close(0)
        if self._own:
            self.sockets.close()
