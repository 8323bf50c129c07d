"""Thread sizing per process and the block pool that large per-frame products run on."""

from __future__ import annotations

import threading

import pytest

from samsa_stream import threads
from samsa_stream.settings import ThreadSettings


@pytest.mark.parametrize(("role", "cores", "expected"), [
    ("worker", 2, 2), ("worker", 16, 16), ("ingest", 1, 1), ("ingest", 2, 2), ("ingest", 16, 4), ("publisher", 16, 1),
    ("tools", 8, 8)])
def test_automatic_sizes_on_small_and_large_boxes(role: threads.Role, cores: int, expected: int) -> None:
    assert threads.threads_for(ThreadSettings(), role, cores=cores) == expected


def test_a_setting_wins_over_the_automatic_size() -> None:
    assert threads.threads_for(ThreadSettings(worker=3, ingest=2), "worker", cores=64) == 3
    assert threads.threads_for(ThreadSettings(worker=3, ingest=2), "ingest", cores=64) == 2


def test_usable_cores_follow_the_affinity() -> None:
    assert 1 <= threads.usable_cores() <= (threads.os.cpu_count() or 1)


@pytest.mark.parametrize(("total", "block"), [(0, 4), (1, 4), (10, 3), (12, 4), (1000, 7)])
def test_map_blocks_covers_every_index_once(total: int, block: int) -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(start: int, stop: int) -> None:
        with lock:
            seen.append((start, stop))

    threads.map_blocks(work, total, block)
    covered = sorted(i for start, stop in seen for i in range(start, stop))
    assert covered == list(range(total))
    assert all(0 < stop - start <= block for start, stop in seen)


def test_map_blocks_raises_a_blocks_error() -> None:
    def work(start: int, stop: int) -> None:
        if start == 8:
            raise RuntimeError("block 8 failed")

    with pytest.raises(RuntimeError, match="block 8 failed"):
        threads.map_blocks(work, 20, 4)


def test_nested_map_blocks_runs_inline_instead_of_waiting_on_itself() -> None:
    inner: list[int] = []
    lock = threading.Lock()

    def outer(start: int, stop: int) -> None:
        def work(a: int, b: int) -> None:
            with lock:
                inner.extend(range(a, b))
        threads.map_blocks(work, 10, 2)

    threads.map_blocks(outer, 8, 1)  # 8 outer blocks, each waits for 5 inner ones: no deadlock
    assert sorted(inner) == sorted(list(range(10)) * 8)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="block"):
        threads.map_blocks(lambda a, b: None, 10, 0)
    with pytest.raises(ValueError, match="threads"):
        threads.configure(0)


def test_configure_sizes_torch_and_blas_and_keeps_openmp_from_spinning_long() -> None:
    import json
    import subprocess
    import sys

    code = ("import json, os\n"
            "from samsa_stream import threads\n"
            "threads.configure(1)\n"
            "import torch\n"
            "from threadpoolctl import threadpool_info\n"
            "blas = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "print(json.dumps({'torch': torch.get_num_threads(), 'blas': blas, "
            "'spin': os.environ.get('GOMP_SPINCOUNT'), 'configured': threads.configured()}))\n")
    env = {k: v for k, v in threads.os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == 1 and got["configured"] == 1 and got["spin"] == str(threads.OPENMP_SPIN)
    assert got["blas"] and all(n == 1 for n in got["blas"])
