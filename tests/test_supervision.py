"""systemd notify protocol: READY, WATCHDOG, STATUS and STOPPING reach a notify socket, and nothing
is sent (or even opened) outside systemd."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sdnotify

from samsa_stream import supervision
from samsa_stream.node import LocalNode
from samsa_stream.runtime import ProcessStats
from samsa_stream.supervision import Notifier, StatusReporter, status_line
from samsa_stream.transport import PollLoop

RECEIVE_TIMEOUT_S = 20.0  # a deadline for a slow machine, never waited out when all is well


@pytest.fixture
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's (short path: unix socket paths end at ~100 bytes)."""
    path = tmp_path_factory.mktemp("n") / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECEIVE_TIMEOUT_S)
    yield sock
    sock.close()


def _nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(RECEIVE_TIMEOUT_S)
    return False


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _enabled(monkeypatch: pytest.MonkeyPatch, sock: socket.socket, watchdog_usec: str | None = "2000000",
             clock: FakeClock | None = None) -> Notifier:
    monkeypatch.setenv("NOTIFY_SOCKET", sock.getsockname())
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if watchdog_usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", watchdog_usec)
    notifier = Notifier.from_environment(clock or FakeClock())
    assert notifier.enabled
    return notifier


def test_nothing_is_sent_or_opened_without_notify_socket(monkeypatch: pytest.MonkeyPatch,
                                                          notify_socket: socket.socket) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a notifier outside systemd must not create a socket")

    monkeypatch.setattr(sdnotify, "SystemdNotifier", refuse)
    notifier = Notifier.from_environment()
    notifier.ready("up")
    notifier.status("counting")
    notifier.watchdog()
    notifier.stopping()
    assert not notifier.enabled
    assert _nothing_waiting(notify_socket)


def test_each_message_reaches_the_notify_socket(monkeypatch: pytest.MonkeyPatch, notify_socket: socket.socket) -> None:
    clock = FakeClock()
    notifier = _enabled(monkeypatch, notify_socket, clock=clock)
    notifier.ready("engine loaded\nsecond line")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=engine loaded second line"
    assert notify_socket.recv(4096) == b"WATCHDOG=1"  # readiness starts the watchdog clock
    notifier.status("frames_processed 12")
    assert notify_socket.recv(4096) == b"STATUS=frames_processed 12"
    notifier.stopping()
    notifier.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"
    clock.now += 10
    notifier.watchdog()  # stopping: systemd no longer expects pings
    assert _nothing_waiting(notify_socket)


def test_watchdog_pings_at_most_every_half_timeout(monkeypatch: pytest.MonkeyPatch,
                                                   notify_socket: socket.socket) -> None:
    clock = FakeClock()
    notifier = _enabled(monkeypatch, notify_socket, watchdog_usec="2000000", clock=clock)
    assert notifier.watchdog_interval_s == 1.0
    sent = []
    for _ in range(40):  # 4 s of passes every 0.1 s
        notifier.watchdog()
        if not _nothing_waiting_peek(notify_socket):
            sent.append((clock.now, notify_socket.recv(4096)))
        clock.now += 0.1
    assert [m for _, m in sent] == [b"WATCHDOG=1"] * len(sent)
    gaps = [round(b - a, 6) for (a, _), (b, _) in zip(sent, sent[1:], strict=False)]
    assert len(sent) == 4 and all(gap >= 1.0 for gap in gaps), sent


def _nothing_waiting_peek(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(RECEIVE_TIMEOUT_S)
    return False


@pytest.mark.parametrize(("usec", "pid"), [(None, None), ("0", None), ("2000000", "1")])
def test_no_watchdog_unless_this_process_has_one(monkeypatch: pytest.MonkeyPatch, notify_socket: socket.socket,
                                                 usec: str | None, pid: str | None) -> None:
    notifier = _enabled(monkeypatch, notify_socket, watchdog_usec=usec)
    if pid is not None:  # the variables were meant for another process (pid 1 is never a test)
        monkeypatch.setenv("WATCHDOG_PID", pid)
        notifier = Notifier.from_environment(FakeClock())
    notifier.watchdog()
    assert notifier.watchdog_interval_s is None
    assert _nothing_waiting(notify_socket)


def test_an_unreachable_notify_socket_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    notifier = Notifier.from_environment()
    notifier.ready("up")
    assert not notifier.enabled
    assert "cannot reach the service manager" in caplog.text


def test_abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"samsa-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECEIVE_TIMEOUT_S)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier.from_environment().status("abstract")
        assert sock.recv(4096) == b"STATUS=abstract"


def test_status_line_names_headline_counters_levels_and_losses() -> None:
    stats = ProcessStats("worker")
    stats.count("frames_received", 1240)
    stats.count("frames_processed", 1234)
    stats.count("results_sent", 1230)
    stats.count("frames_stale", 3)
    stats.count("tracks_saved", 7)  # neither headline nor trouble: left out
    stats.gauge("streams", 2)
    assert status_line(stats) == ("frames_received 1240, frames_processed 1234, results_sent 1230, "
                                  "prompts_applied 0; streams 2; frames_stale 3")
    other = ProcessStats("tool")
    assert status_line(other) == "running"
    other.count("things", 2)
    other.count("things_dropped", 1)
    assert status_line(other) == "things 2; things_dropped 1"


def test_status_reporter_sends_a_status_line_every_stats_interval(monkeypatch: pytest.MonkeyPatch,
                                                                  notify_socket: socket.socket) -> None:
    clock = FakeClock()
    notifier = _enabled(monkeypatch, notify_socket, watchdog_usec=None, clock=clock)
    stats = ProcessStats("publisher", interval_s=5.0)
    reporter = StatusReporter(stats, notifier, clock)
    stats.count("masks_published", 9)
    reporter.pass_done()
    assert _nothing_waiting(notify_socket)
    clock.now += 5.0
    reporter.pass_done()
    assert notify_socket.recv(4096) == b"STATUS=masks_published 9, subscriptions 0"
    clock.now += 1.0
    reporter.pass_done()
    assert _nothing_waiting(notify_socket)


def test_the_poll_loop_pings_every_pass_and_says_stopping(monkeypatch: pytest.MonkeyPatch,
                                                          notify_socket: socket.socket) -> None:
    clock = FakeClock()
    notifier = _enabled(monkeypatch, notify_socket, watchdog_usec="1", clock=clock)  # ping on every pass
    stop = threading.Event()
    loop = PollLoop(stop, 1, ProcessStats("test", 3600), notifier)
    passes = 0

    def tick() -> bool:
        nonlocal passes
        passes += 1
        clock.now += 1
        return passes == 3

    loop.run(tick)
    assert [notify_socket.recv(4096) for _ in range(4)] == [b"WATCHDOG=1"] * 3 + [b"STOPPING=1"]


def test_the_poll_loop_uses_the_installed_notifier(monkeypatch: pytest.MonkeyPatch,
                                                   notify_socket: socket.socket) -> None:
    notifier = _enabled(monkeypatch, notify_socket)
    supervision.install(notifier)
    try:
        PollLoop(threading.Event(), 1, ProcessStats("test")).run_once(0)
    finally:
        supervision.install(None)
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert supervision.current() is not notifier and not supervision.current().enabled


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_a_publisher_under_a_notify_socket(notify_socket: socket.socket) -> None:
    """A real process: READY=1 once bound, then watchdog pings and status lines, STOPPING=1 on SIGTERM."""
    with LocalNode({"log": {"stats_interval_s": "0.2"}}) as node:
        node.env["NOTIFY_SOCKET"] = notify_socket.getsockname()
        node.env["WATCHDOG_USEC"] = "200000"  # a ping every 0.1 s at most
        node.start("publisher")
        first = _receive(notify_socket)
        assert first.startswith("READY=1\nSTATUS=bound"), first
        for endpoint in (node.settings.endpoints.results, node.settings.endpoints.broadcast):
            assert Path(endpoint.removeprefix("ipc://")).exists()  # ready means bound
        seen: list[str] = []
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while not (seen.count("WATCHDOG=1") >= 3 and any(m.startswith("STATUS=") for m in seen)):
            assert time.monotonic() < deadline, seen
            seen.append(_receive(notify_socket))
        assert set(seen) <= {"WATCHDOG=1"} | {m for m in seen if m.startswith("STATUS=masks_published 0")}, seen
        node.procs["publisher"].send_signal(signal.SIGTERM)
        while (message := _receive(notify_socket)) != "STOPPING=1":
            assert message == "WATCHDOG=1" or message.startswith("STATUS="), message
        assert node.procs["publisher"].wait(RECEIVE_TIMEOUT_S) == 0
        assert _nothing_waiting(notify_socket)  # nothing after STOPPING: it is sent once


def test_ready_freezes_start_up_objects_out_of_the_collector_only_for_a_process_of_its_own() -> None:
    import gc

    before = gc.get_freeze_count()
    Notifier().ready("serving")  # a test's notifier: nothing frozen
    assert gc.get_freeze_count() == before
    notifier = Notifier()
    notifier.freeze_heap = True
    try:
        notifier.ready("serving")
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
