"""Busy neighbours: CPU-bound processes started beside a measurement, as ingest, worker and publisher
(or anything else on the box) compete for a small machine's cores."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

SPIN = "while True: pass"


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@contextmanager
def busy_processes(count: int, start_timeout_s: float = 30.0) -> Iterator[list[int]]:
    """``count`` processes spinning on a core each, running (seen using CPU) before the block starts; killed after.

    Yields their pids. ``count`` 0 yields at once."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL) for _ in range(count)]
    try:
        deadline = time.monotonic() + start_timeout_s
        waiting = list(procs)
        while waiting:
            waiting = [p for p in waiting if p.poll() is None and _started(p.pid) is False]
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a busy process exited before the measurement")
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} busy process(es) did not start using the CPU in "
                                   f"{start_timeout_s:g} s")
            if waiting:
                time.sleep(0.01)  # polling the processes' CPU time, the observable sign that they run
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _started(pid: int) -> bool:
    try:
        return _cpu_ticks(pid) >= 10  # 0.1 s of CPU: past the interpreter start, into the loop
    except (OSError, ValueError, IndexError):
        return False
