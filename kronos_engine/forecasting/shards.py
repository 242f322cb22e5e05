"""Forecasting work split over the processes of a job, with one process's result.

The work is a list of batches, each exactly the batch one process would run (same members,
same order), so every number is the one process's. Batch `b` runs on rank `b % world`; rank 0
gets every result back in batch order, one round of `world` batches at a time, so at most
`world` batches are in flight and memory stays bounded on long splits. The exchange itself is
given (`Shard.gather`: the launcher's process group), so this module needs no process group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: `rank` of `world`, and `gather`, which sends one object
    from every rank to rank 0 (there: the objects in rank order; elsewhere: None)."""

    rank: int = 0
    world: int = 1
    gather: Callable[[Any], list[Any] | None] | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that gets every result, reports and writes."""
        return self.rank == 0


def in_order(count: int, compute: Callable[[int], T], shard: Shard | None) -> Iterator[T]:
    """`compute(b)` for b in 0..count-1, each run on rank `b % world`; yields every result,
    in batch order, on rank 0 and nothing elsewhere (every rank must iterate to the end)."""
    if shard is None or shard.world == 1:
        for b in range(count):
            yield compute(b)
        return
    if shard.gather is None:
        raise ValueError("a shard of several processes needs a gather")
    for first in range(0, count, shard.world):
        b = first + shard.rank
        mine = compute(b) if b < count else None
        results = shard.gather(mine)
        if results is not None:
            yield from results[: min(shard.world, count - first)]
