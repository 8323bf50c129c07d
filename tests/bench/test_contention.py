"""Busy neighbours really run during the block and are gone after it."""

from __future__ import annotations

import os

from samsa_stream.bench.contention import _cpu_ticks, busy_processes


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_busy_processes_use_the_cpu_during_the_block_and_are_reaped_after() -> None:
    with busy_processes(2) as pids:
        assert len(pids) == 2 and os.getpid() not in pids
        assert all(_cpu_ticks(pid) >= 10 for pid in pids)  # each has spun for at least 0.1 s of CPU
    assert not any(_alive(pid) for pid in pids)


def test_no_busy_processes() -> None:
    with busy_processes(0) as pids:
        assert pids == []
