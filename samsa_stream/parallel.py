"""Running one command as several processes with torch.distributed, as ``torchrun`` launches them.

``torchrun --nproc-per-node N samsa-stream eval ...`` starts N copies with RANK, WORLD_SIZE and
LOCAL_RANK set; ``Ranks.start`` joins them (gloo on CPUs, nccl on GPUs). Without those variables
the command is one process and nothing distributed is touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import SamsaError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ParallelError(SamsaError, RuntimeError):
    """The launcher's environment is inconsistent, or the process group cannot be joined."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ParallelError(f"{name}={text!r} is not an integer (set by torchrun)") from None


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def leader(self) -> bool:
        """Rank 0: the process that merges results and writes shared files."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        """What torchrun set (RANK, WORLD_SIZE, LOCAL_RANK), without joining anything."""
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local = _env_int("LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ParallelError(f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, "
                                f"LOCAL_RANK={local}")
        return cls(rank=rank, world_size=world, local_rank=local)

    @classmethod
    def start(cls, device: str = "cpu") -> Ranks:
        """Join the process group torchrun prepared (one per run); a single process returns at once.

        ``device`` is 'cpu', 'cuda' or 'auto' (cuda when available): gloo for CPUs, nccl for GPUs (each
        rank on GPU LOCAL_RANK)."""
        ranks = cls.from_env()
        if ranks.world_size == 1:
            return ranks
        import torch
        import torch.distributed as dist

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"

        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        if not dist.is_initialized():
            try:
                dist.init_process_group(backend=backend)
            except (RuntimeError, ValueError) as exc:
                raise ParallelError(f"cannot join the {ranks.world_size}-process group as rank {ranks.rank}: "
                                    f"{exc}") from None
        log.info("rank %d of %d (%s)", ranks.rank, ranks.world_size, backend)
        return cls(ranks.rank, ranks.world_size, ranks.local_rank, backend)

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every world_size-th one, starting at its rank."""
        return list(items[self.rank::self.world_size])

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing for a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def stop(self) -> None:
        """Leave the process group (nothing for a single process)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
