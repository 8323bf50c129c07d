"""log.format=json: one JSON object per line, with the process, the logger and any stream/frame."""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import datetime

import pytest

from samsa_stream.node import LocalNode
from samsa_stream.runtime import setup_logging
from samsa_stream.supervision import JsonFormatter

FIELDS = {"time", "level", "process", "pid", "logger", "message"}


def _record(msg: str, *args: object, exc_info: object = None, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("samsa_stream.test").makeRecord(
        "samsa_stream.test", logging.WARNING, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_object_with_the_fields() -> None:
    line = JsonFormatter("worker").format(_record("frame %d of %s late", 7, "cam0", stream="cam0", frame=7))
    entry = json.loads(line)
    assert "\n" not in line
    assert set(entry) == FIELDS | {"stream", "frame"}
    assert entry["message"] == "frame 7 of cam0 late"
    assert (entry["level"], entry["process"], entry["logger"]) == ("WARNING", "worker", "samsa_stream.test")
    assert entry["stream"] == "cam0" and entry["frame"] == 7
    assert isinstance(entry["pid"], int)
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None  # time zone stated (UTC)


def test_a_traceback_stays_inside_its_line() -> None:
    try:
        raise RuntimeError("engine\nfault")
    except RuntimeError:
        line = JsonFormatter("worker").format(_record("step failed", exc_info=sys.exc_info()))
    entry = json.loads(line)
    assert "\n" not in line and "stream" not in entry
    assert "RuntimeError: engine\nfault" in entry["exception"]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'text' or 'json'"):
        setup_logging("INFO", "x", "xml")


def test_a_process_logs_json_lines(tmp_path_factory: pytest.TempPathFactory) -> None:
    with LocalNode({"log": {"format": "json"}}) as node, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path_factory.mktemp("n") / "notify"))
        notify.settimeout(20)
        node.env["NOTIFY_SOCKET"] = notify.getsockname()
        node.start("publisher")
        assert notify.recv(4096).startswith(b"READY=1")  # serving: its start-up has been logged
        assert node.stop("publisher") == 0
        lines = (node.log_dir / "publisher.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, not just most
    assert entries and all(FIELDS <= set(e) and e["process"] == "publisher" for e in entries), lines
    messages = [e["message"] for e in entries]
    assert any(m.startswith("publisher ") and " up: " in m for m in messages), messages
    assert any(m.startswith("publisher stopped") for m in messages), messages
