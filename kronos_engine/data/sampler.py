"""Deterministic, shardable, resumable window sampling.

The epoch's global draw is a pure function of ``(seed, epoch)`` (own numpy Generator, never
global RNG). Rank ``r`` of ``W`` takes the strided shard ``global[r::W]``, so rank r's k-th
batch of size B is a subset of a single process's k-th batch of size ``B * W``: 1-process
and N-process runs see the same samples per optimiser step. ``consumed`` skips what a rank
already took this epoch, so a resumed run continues with exactly the tail of the epoch.

Memory: an epoch is one int64 array (8 bytes a draw), handed to the DataLoader in chunks of
Python ints, never as one Python list (~40 bytes a draw: +600 MB at 16M windows).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from kronos_engine.errors import DataError

SAMPLER_MODES: tuple[str, ...] = ("uniform", "per_symbol", "sequential")
_CHUNK = 1 << 16  # indices turned into Python ints at a time


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """All of ``range(n)``, or ``count`` distinct evenly spaced indices including both ends."""
    if count is None or count >= n:
        return np.arange(n, dtype=np.int64)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if count == 1:
        return np.zeros(1, dtype=np.int64)
    return np.floor(np.linspace(0, n - 1, count) + 0.5).astype(np.int64)


class WindowSampler(torch.utils.data.Sampler[int]):
    """Window indices of one rank for one epoch.

    * ``uniform``: ``num_samples`` draws with replacement over all windows (the public recipe).
    * ``per_symbol``: draw a symbol uniformly, then a window within it, so long histories do
      not drown short ones.
    * ``sequential``: a fixed list (all windows, or ``num_samples`` evenly spaced ones), sharded
      ``[rank::world_size]`` without padding, for validation.
    """

    def __init__(
        self,
        dataset,
        mode: str = "uniform",
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if mode not in SAMPLER_MODES:
            raise DataError(
                f"sampling: '{mode}' is not allowed; choose one of {list(SAMPLER_MODES)}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"sampler: need 0 <= rank < world_size, got rank {rank}, world_size {world_size}"
            )
        n = len(dataset)
        if n == 0:
            raise DataError("sampler: the dataset has no windows")
        if num_samples is not None and num_samples < 1:
            raise DataError(f"sampler: num_samples must be >= 1 or None, got {num_samples}")
        self.mode = mode
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_windows = n
        self.epoch = 0
        self.consumed = 0
        counts = np.asarray(dataset.window_counts_per_symbol, dtype=np.int64)
        self._counts = counts
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if mode == "sequential":
            self._fixed = evenly_spaced(n, num_samples)
            self.num_samples = len(self._fixed)
            self.num_samples_per_rank = len(self._fixed[self.rank :: self.world_size])
        else:
            self.num_samples = int(num_samples) if num_samples is not None else n
            if self.num_samples < self.world_size:
                raise DataError(
                    f"sampler: num_samples {self.num_samples} is smaller than world_size "
                    f"{self.world_size}; every rank needs at least one sample"
                )
            self.num_samples_per_rank = self.num_samples // self.world_size

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Select the epoch; ``consumed`` = samples this rank already took in it (resume)."""
        if epoch < 0:
            raise DataError(f"sampler: epoch must be >= 0, got {epoch}")
        if not 0 <= consumed <= self.num_samples_per_rank:
            raise DataError(
                f"sampler: consumed must be in [0, {self.num_samples_per_rank}], got {consumed}"
            )
        self.epoch = int(epoch)
        self.consumed = int(consumed)

    def _generator(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % (2**63), int(self.seed < 0), int(epoch)])

    def global_indices(self, epoch: int | None = None) -> np.ndarray:
        """The whole epoch's draw before sharding (identical on every rank)."""
        epoch = self.epoch if epoch is None else epoch
        if self.mode == "sequential":
            return self._fixed.copy()
        rng = self._generator(epoch)
        if self.mode == "uniform":
            return rng.integers(0, self.num_windows, size=self.num_samples, dtype=np.int64)
        return self._per_symbol_draw(rng)

    def _per_symbol_draw(self, rng: np.random.Generator) -> np.ndarray:
        """A symbol uniformly, then a window in it; in place: at most 3 arrays of 8 bytes a draw."""
        alive = np.flatnonzero(self._counts > 0)
        symbols = alive[rng.integers(0, len(alive), size=self.num_samples)]
        within = rng.random(self.num_samples)
        within *= self._counts[symbols]
        np.floor(within, out=within)
        draw = within.astype(np.int64)
        del within
        last = self._counts[symbols]
        last -= 1
        np.minimum(draw, last, out=draw)
        del last
        draw += self._offsets[symbols]
        return draw

    def rank_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's whole shard of the epoch (ignores ``consumed``)."""
        shard = self.global_indices(epoch)[self.rank :: self.world_size]
        return shard[: self.num_samples_per_rank]

    def __iter__(self) -> Iterator[int]:
        indices = self.rank_indices()[self.consumed :]
        for start in range(0, len(indices), _CHUNK):
            yield from indices[start : start + _CHUNK].tolist()

    def __len__(self) -> int:
        return self.num_samples_per_rank - self.consumed
