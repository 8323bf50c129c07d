"""Typed reads of header fields: every decoder checks type and range here before it uses a value.

Each helper raises ProtocolError naming the message and the field, so a receive loop can turn
any malformed message into one counted, logged rejection.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import ProtocolError
from .codec import INT64_MAX

STREAM_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)
MAX_TEXT = 4096  # longest label, notice or error text a receiver accepts
MAX_ITEMS = 256  # longest list (objects, notices, hops) a receiver accepts
_MISSING: Any = object()


def check_stream_id(value: Any, what: str = "stream id") -> str:
    """``value`` if it is a stream id (``[A-Za-z0-9_.-]{1,64}``), else ProtocolError.

    Stream ids become topic prefixes and file names, so a ``/`` or an empty id is never let through."""
    if not isinstance(value, str) or not _STREAM_ID.match(value):
        raise ProtocolError(f"{what}: {value!r} is not a stream id (1 to 64 of A-Z a-z 0-9 _ . -)")
    return value


def _typed(header: dict[str, Any], name: str, what: str, default: Any, kinds: tuple[type, ...],
           kind_name: str) -> tuple[Any, bool]:
    """(value, True) when the field is given and of one of ``kinds`` exactly (so bool is no int);
    (default, False) when it is absent, or nil where nil is the default; ProtocolError naming the field otherwise."""
    if name in header and not (header[name] is None and default is None):
        value = header[name]
        if type(value) not in kinds:
            raise ProtocolError(f"{what}: header field {name!r} must be {kind_name}, got {value!r:.80}")
        return value, True
    if default is _MISSING:
        raise ProtocolError(f"{what}: header field {name!r} is missing")
    return default, False


def integer(header: dict[str, Any], name: str, what: str, lo: int = 0, hi: int = INT64_MAX,
            default: Any = _MISSING) -> Any:
    """An integer field in [lo, hi] (bool is not an integer here)."""
    value, given = _typed(header, name, what, default, (int,), "an integer")
    if given and not lo <= value <= hi:
        raise ProtocolError(f"{what}: header field {name!r} must be between {lo} and {hi}, got {value}")
    return value


def number(header: dict[str, Any], name: str, what: str, default: Any = _MISSING) -> Any:
    """A finite int or float field, as a float."""
    value, given = _typed(header, name, what, default, (int, float), "a number")
    if not given:
        return value
    if not math.isfinite(value):
        raise ProtocolError(f"{what}: header field {name!r} must be a finite number, got {value!r}")
    return float(value)


def text(header: dict[str, Any], name: str, what: str, default: Any = _MISSING, max_len: int = MAX_TEXT) -> Any:
    value, given = _typed(header, name, what, default, (str,), "a string")
    if given and len(value) > max_len:
        raise ProtocolError(f"{what}: header field {name!r} is {len(value)} characters, more than {max_len}")
    return value


def boolean(header: dict[str, Any], name: str, what: str, default: Any = _MISSING) -> Any:
    return _typed(header, name, what, default, (bool,), "true or false")[0]


def mapping(header: dict[str, Any], name: str, what: str, default: Any = _MISSING) -> Any:
    return _typed(header, name, what, default, (dict,), "a map")[0]


def items(header: dict[str, Any], name: str, what: str, default: Any = _MISSING, max_len: int = MAX_ITEMS) -> Any:
    value, given = _typed(header, name, what, default, (list,), "a list")
    if given and len(value) > max_len:
        raise ProtocolError(f"{what}: header field {name!r} has {len(value)} entries, more than {max_len}")
    return value


def texts(header: dict[str, Any], name: str, what: str, default: Any = _MISSING) -> list[str]:
    """A list of strings (notices, warnings)."""
    values = items(header, name, what, default)
    for value in values:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise ProtocolError(f"{what}: every entry of {name!r} must be a string of at most {MAX_TEXT} "
                                f"characters, got {value!r:.80}")
    return list(values)


def stream(header: dict[str, Any], what: str) -> str:
    """The ``stream`` field, checked against the stream-id pattern."""
    return check_stream_id(text(header, "stream", what, max_len=64), f"{what}: header field 'stream'")


def hops(header: dict[str, Any], what: str) -> list[list[Any]]:
    """Per-hop timestamps: a list of ``[name, ns]`` pairs."""
    out = []
    for hop in items(header, "hops", what, default=[], max_len=32):
        if not (isinstance(hop, list) and len(hop) == 2 and isinstance(hop[0], str) and len(hop[0]) <= 64
                and type(hop[1]) is int and 0 <= hop[1] <= INT64_MAX):
            raise ProtocolError(f"{what}: 'hops' must be a list of [name, ns] pairs, got entry {hop!r:.80}")
        out.append([hop[0], hop[1]])
    return out


__all__ = ["MAX_ITEMS", "MAX_TEXT", "STREAM_ID_PATTERN", "boolean", "check_stream_id", "hops", "integer", "items",
           "mapping", "number", "stream", "text", "texts"]
