"""Ranks: what torchrun's environment says, refused when inconsistent, and how items are shared out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from samsa_stream.errors import SamsaError
from samsa_stream.parallel import ParallelError, Ranks

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture
def launcher_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate: none of torchrun's variables set (the test sets the ones it needs)."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_launcher_variables_it_is_rank_0_of_1(launcher_env: pytest.MonkeyPatch) -> None:
    ranks = Ranks.from_env()
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.backend) == (0, 1, 0, None)
    assert ranks.leader and not ranks.distributed


def test_empty_variables_count_as_unset(launcher_env: pytest.MonkeyPatch) -> None:
    for name in LAUNCHER_VARS:
        launcher_env.setenv(name, "")
    assert Ranks.from_env() == Ranks(0, 1, 0)


def test_reads_what_torchrun_sets(launcher_env: pytest.MonkeyPatch) -> None:
    launcher_env.setenv("RANK", "3")
    launcher_env.setenv("WORLD_SIZE", "4")
    launcher_env.setenv("LOCAL_RANK", "1")
    ranks = Ranks.from_env()
    assert (ranks.rank, ranks.world_size, ranks.local_rank) == (3, 4, 1)
    assert not ranks.leader
    assert not ranks.distributed  # from_env joins nothing


def test_local_rank_defaults_to_the_rank(launcher_env: pytest.MonkeyPatch) -> None:
    launcher_env.setenv("RANK", "2")
    launcher_env.setenv("WORLD_SIZE", "3")
    assert Ranks.from_env().local_rank == 2


@pytest.mark.parametrize(("env", "named"), [
    ({"RANK": "2", "WORLD_SIZE": "2"}, ["RANK=2", "WORLD_SIZE=2"]),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, ["RANK=-1", "WORLD_SIZE=2"]),
    ({"WORLD_SIZE": "0"}, ["WORLD_SIZE=0"]),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, ["LOCAL_RANK=-1"]),
    ({"WORLD_SIZE": "x"}, ["WORLD_SIZE", "'x'"]),
    ({"RANK": "1.5", "WORLD_SIZE": "2"}, ["RANK", "'1.5'"]),
    ({"LOCAL_RANK": "zero"}, ["LOCAL_RANK", "'zero'"]),
])
def test_inconsistent_environment_is_refused_naming_the_values(launcher_env: pytest.MonkeyPatch,
                                                                env: dict[str, str], named: list[str]) -> None:
    for name, value in env.items():
        launcher_env.setenv(name, value)
    with pytest.raises(ParallelError) as caught:
        Ranks.from_env()
    assert all(text in str(caught.value) for text in named), str(caught.value)
    assert isinstance(caught.value, SamsaError)  # the CLI reports it as one line


def test_start_without_launcher_joins_nothing(launcher_env: pytest.MonkeyPatch) -> None:
    ranks = Ranks.start("cpu")
    assert ranks == Ranks(0, 1, 0, None) and not ranks.distributed
    ranks.barrier()  # both are no-ops for a single process
    ranks.stop()


def test_start_refuses_an_inconsistent_environment(launcher_env: pytest.MonkeyPatch) -> None:
    launcher_env.setenv("RANK", "5")
    launcher_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ParallelError, match="RANK=5"):
        Ranks.start("cpu")


def test_shard_deals_items_round_robin() -> None:
    items = ["a", "b", "c", "d", "e", "f", "g"]
    assert Ranks(0, 3).shard(items) == ["a", "d", "g"]
    assert Ranks(1, 3).shard(items) == ["b", "e"]
    assert Ranks(2, 3).shard(items) == ["c", "f"]
    assert Ranks(0, 1).shard(items) == items
    assert Ranks(1, 2).shard(range(5)) == [1, 3]  # a range (as evaluate passes it) gives a list


@given(count=st.integers(0, 60), world=st.integers(1, 9))
def test_shards_of_all_ranks_partition_the_items(count: int, world: int) -> None:
    items = [f"item{i}" for i in range(count)]
    shards = [Ranks(rank, world).shard(items) for rank in range(world)]
    dealt = [item for shard in shards for item in shard]
    assert sorted(dealt) == sorted(items) and len(dealt) == len(set(dealt))  # each item exactly once
    for rank, shard in enumerate(shards):
        assert shard == [item for i, item in enumerate(items) if i % world == rank]  # order kept
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # lower ranks take the rest
