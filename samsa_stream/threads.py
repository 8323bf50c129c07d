"""How many threads a process computes with, and the one pool its per-frame array work runs on.

A node's processes share the machine's cores. Thread pools that spin while they wait (OpenBLAS,
OpenMP's default) turn that sharing into a fight: with two busy neighbours a two-thread BLAS product
on two cores ran 15x slower than alone. So every process:
- runs BLAS with one thread per call and sets torch's and OpenCV's pools to its own thread count,
  with OpenMP's threads spinning only briefly before they sleep (set before torch is imported, which
  reads it once): measured on 2 cores, SAM2's image encoder took 108 ms alone and 2.7 s beside two
  busy processes with OpenMP's default spin, 127 ms and 320 ms never spinning, 108 ms and 240 ms
  with a 3,000-iteration spin;
- splits its large per-frame products (spectral angles, pseudo-RGB, layout conversion) into blocks
  handed out one at a time to its own pool of plain threads (``map_blocks``): a thread that is not
  scheduled delays only its block, the others take the rest, and idle threads sleep.

``configure`` runs once at start-up (process commands, tools); before it, a process computes with
one thread per core as if configured for every core.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the wire protocol uses the pool: no settings (pydantic) load for it
    from .settings import ThreadSettings

log = logging.getLogger(__name__)

Role = Literal["ingest", "worker", "publisher", "tools"]

OPENMP_SPIN = 3000  # iterations an idle OpenMP thread spins before it sleeps (GNU default: 300,000)

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = 0  # 0: not configured yet (one thread per usable core)
_in_pool = threading.local()
_blas_limit: object | None = None  # threadpoolctl's limiter, kept alive so the limit holds


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a systemd CPUAffinity= or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(settings: ThreadSettings, role: Role, cores: int | None = None) -> int:
    """The thread count of ``role``: its setting, or sized from the cores when that is 0."""
    chosen = getattr(settings, role)
    if chosen:
        return int(chosen)
    cores = usable_cores() if cores is None else cores
    if role == "ingest":  # two threads bring the layout conversion within 2x of a memcpy; more on big boxes
        return min(cores, max(2, cores // 4))
    if role == "publisher":
        return 1
    return cores


def configure(threads: int) -> None:
    """Size this process's pools to ``threads``: the block pool, torch, OpenCV, and BLAS at one thread per call."""
    global _threads, _pool
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    # OpenMP reads these once, when torch loads it: only a process that has not imported torch yet can set them.
    os.environ.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN))
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    else:
        _set_torch_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # opencv is a dependency; a broken install shows elsewhere
        pass
    _limit_blas()
    with _lock:
        old, _pool, _threads = _pool, None, threads
    if old is not None:
        old.shutdown(wait=False)
    log.debug("computing with %d thread(s); BLAS one per call", threads)


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def configured() -> int:
    """This process's thread count (one per usable core until ``configure`` runs)."""
    return _threads or usable_cores()


def _limit_blas() -> None:
    """One BLAS thread per call: blocks run in parallel on the pool, and a BLAS pool would spin beside it."""
    global _blas_limit
    from threadpoolctl import threadpool_limits

    _blas_limit = threadpool_limits(limits=1, user_api="blas")


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _limit_blas()
            _pool = ThreadPoolExecutor(configured(), thread_name_prefix="samsa-block", initializer=_mark_pool)
        return _pool


def _mark_pool() -> None:
    _in_pool.active = True


def map_blocks(work: Callable[[int, int], None], total: int, block: int) -> None:
    """Call ``work(start, stop)`` for consecutive blocks of ``range(total)``, spread over the pool.

    Blocks are taken one at a time by whichever thread is free. Runs inline with one thread, for a
    single block, or when called from a pool thread (no nested waiting on the pool). Raises the first
    exception a block raised."""
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    starts = range(0, total, block)
    if configured() == 1 or len(starts) <= 1 or getattr(_in_pool, "active", False):
        for start in starts:
            work(start, min(start + block, total))
        return
    futures = [_executor().submit(work, start, min(start + block, total)) for start in starts]
    for future in futures:
        future.result()
