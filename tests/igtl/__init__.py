"""Tests of the OpenIGTLink bridge; ``RecordingClient`` is the independent client both test files use."""

from __future__ import annotations

from typing import Any

import pyigtl

from samsa_stream.igtl import STATUS_DEVICE


class _Arrivals(dict):  # type: ignore[type-arg]
    """pyigtl's per-device inbox that also keeps every message in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[Any] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.order.append(value)


class RecordingClient:
    """pyigtl's OpenIGTLinkClient (it keeps only the newest message per device), recording every message."""

    def __init__(self, port: int) -> None:
        self.client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=False)
        self._arrivals = _Arrivals()
        self.client.incoming_messages = self._arrivals  # before its thread starts: nothing is missed
        self.client.start()

    def messages(self, device: str | None = None, kind: str | None = None) -> list[Any]:
        """Every message received so far, oldest first, of ``device`` and message type ``kind`` if given."""
        with self.client.lock_incoming_messages:
            got = list(self._arrivals.order)
        return [m for m in got if (device is None or m.device_name == device)
                and (kind is None or m.message_type == kind)]

    def texts(self, device: str) -> list[str]:
        return [m.string for m in self.messages(device, "STRING")]

    def close(self) -> None:
        self.client.stop()


def status_and_labels(messages: list[Any], label_device: str) -> list[str]:
    """The messages in arrival order as 'label' or the status word ('waiting', 'live', 'stale'); asserts that
    no label map comes between a 'stale' status and the next 'live' one."""
    events: list[str] = []
    stale = False
    for m in messages:
        if m.device_name == STATUS_DEVICE:
            stale = m.string.startswith("stale")
            events.append(m.string.split(":")[0])
        elif m.device_name == label_device:
            assert not stale, f"label map sent while stale: {events}"
            events.append("label")
    return events
