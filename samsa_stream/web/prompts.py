"""Prompts from pages to the worker: checking what a page sent, and one console shared by every page.

The PromptConsole blocks (DEALER socket, reply timeout), so it lives on one thread of its own and
requests reach it one at a time, in the order the pages sent them."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..display.console import PromptConsole, PromptTimeout
from ..errors import SamsaError
from ..protocol import PromptReply
from ..protocol.messages import MAX_OBJECT_ID
from ..settings import Settings

OPS = ("click", "undo", "reset", "remove", "state")  # what a page may ask for
_MAX_COORD = 1e6


class PageMessageError(ValueError):
    """A message from a page that is not a valid request; the text says what was wrong."""


def _object_id(msg: dict[str, Any], required: bool) -> int | None:
    value = msg.get("object_id")
    if value is None and not required:
        return None
    if type(value) is not int or not 1 <= value <= MAX_OBJECT_ID:
        raise PageMessageError(f"object_id must be an integer from 1 to {MAX_OBJECT_ID}, got {value!r:.40}")
    return value


def _coordinate(msg: dict[str, Any], name: str) -> float:
    value = msg.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and 0 <= value <= _MAX_COORD):
        raise PageMessageError(f"{name} must be a finite number of image pixels (0 or more), got {value!r:.40}")
    return float(value)


def prompt_fields(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(op, fields for PromptConsole.request) of a page's ``prompt`` message; raises PageMessageError."""
    op = msg.get("op")
    if op not in OPS:
        raise PageMessageError(f"op must be one of {', '.join(OPS)}, got {op!r:.40}")
    if op == "click":
        positive = msg.get("positive", True)
        frame_id = msg.get("frame_id")
        if type(positive) is not bool:
            raise PageMessageError(f"positive must be true or false, got {positive!r:.40}")
        if frame_id is not None and (type(frame_id) is not int or frame_id < 0):
            raise PageMessageError(f"frame_id must be a frame number or null, got {frame_id!r:.40}")
        return op, {"object_id": _object_id(msg, True), "x": _coordinate(msg, "x"), "y": _coordinate(msg, "y"),
                    "positive": positive, "frame_id": frame_id}
    if op == "undo":
        return op, {"object_id": _object_id(msg, False)}
    if op == "remove":
        return op, {"object_id": _object_id(msg, True)}
    return op, {}


class PromptRelay:
    """Sends page prompts to the worker through one PromptConsole on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-prompts")
        self._console: PromptConsole | None = None

    def _request(self, stream_id: str, op: str, fields: dict[str, Any]) -> PromptReply:
        if self._console is None:  # made on the relay's thread, the only one that ever uses it
            self._console = PromptConsole(self.settings, stream_id)
        return self._console.request(op, stream_id=stream_id, **fields)

    async def send(self, stream_id: str, op: str, fields: dict[str, Any]) -> PromptReply:
        """The worker's reply; a worker that does not answer (or a request it cannot take) becomes a
        reply with ``ok`` False and the reason in ``error``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._request, stream_id, op, fields)
        except PromptTimeout as exc:
            return PromptReply(0, False, f"the worker did not answer: {exc}")
        except SamsaError as exc:
            return PromptReply(0, False, str(exc))

    def close(self) -> None:
        def _close() -> None:
            if self._console is not None:
                self._console.close()

        self._executor.submit(_close)
        self._executor.shutdown(wait=True)


__all__ = ["OPS", "PageMessageError", "PromptRelay", "prompt_fields"]
