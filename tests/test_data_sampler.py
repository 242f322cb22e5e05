"""Sampler: determinism, strided sharding, exact resume, balance, DataLoader workers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from kronos_engine.config import TrainConfig
from kronos_engine.data import (
    KlineWindowDataset,
    WindowSampler,
    build_datasets,
    collate_windows,
    generate_demo_frames,
)
from kronos_engine.errors import DataError


@pytest.fixture(scope="module")
def ds():
    frames = generate_demo_frames(4, 600, "day", seed=3)
    lengths = {"DEMO000": 600, "DEMO001": 60, "DEMO002": 25, "DEMO003": 200}
    frames = {k: v.iloc[: lengths[k]].reset_index(drop=True) for k, v in frames.items()}
    return KlineWindowDataset.from_frames(frames, lookback=15, predict=4)


def test_draw_is_a_pure_function_of_seed_and_epoch(ds):
    a = WindowSampler(ds, "uniform", num_samples=300, seed=5)
    b = WindowSampler(ds, "uniform", num_samples=300, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    assert first == list(b) == list(a)  # iterating again gives the same epoch
    assert len(first) == len(a) == a.num_samples_per_rank == 300
    assert all(isinstance(i, int) and 0 <= i < len(ds) for i in first)
    b.set_epoch(3)
    assert list(b) != first
    c = WindowSampler(ds, "uniform", num_samples=300, seed=6)
    c.set_epoch(2)
    assert list(c) != first
    np.random.seed(0)
    torch.manual_seed(0)
    before = list(a)
    np.random.seed(1)
    torch.manual_seed(1)
    assert list(a) == before  # no global RNG involved


def test_default_num_samples_is_the_number_of_windows(ds):
    assert len(WindowSampler(ds, "uniform", None, seed=0)) == len(ds)


@pytest.mark.parametrize("mode", ["uniform", "per_symbol"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_strided_shards_partition_the_single_process_draw(ds, mode, world_size):
    total, batch = 97, 4
    single = WindowSampler(ds, mode, total, seed=9)
    single.set_epoch(1)
    full = list(single)
    shards = []
    for rank in range(world_size):
        sampler = WindowSampler(ds, mode, total, seed=9, rank=rank, world_size=world_size)
        sampler.set_epoch(1)
        shards.append(list(sampler))
        assert len(sampler) == total // world_size == sampler.num_samples_per_rank
    kept = (total // world_size) * world_size
    # disjoint positions, union equals the 1-process draw
    assert sorted(i for shard in shards for i in shard) == sorted(full[:kept])
    for rank, shard in enumerate(shards):
        assert shard == full[rank:kept:world_size]
        # rank r's k-th batch of B is inside the single process's k-th batch of B * W
        for k in range(len(shard) // batch):
            big = Counter(full[k * batch * world_size : (k + 1) * batch * world_size])
            small = Counter(shard[k * batch : (k + 1) * batch])
            assert not small - big


@pytest.mark.parametrize("mode", ["uniform", "per_symbol", "sequential"])
def test_resume_yields_exactly_the_tail_of_the_epoch(ds, mode):
    sampler = WindowSampler(ds, mode, 50, seed=2, rank=1, world_size=2)
    sampler.set_epoch(4)
    full = list(sampler)
    for consumed in [0, 1, 17, len(full)]:
        resumed = WindowSampler(ds, mode, 50, seed=2, rank=1, world_size=2)
        resumed.set_epoch(4, consumed=consumed)
        assert list(resumed) == full[consumed:]
        assert len(resumed) == len(full) - consumed
    with pytest.raises(DataError, match="consumed must be in"):
        sampler.set_epoch(4, consumed=len(full) + 1)
    sampler.set_epoch(5)  # a new epoch starts from the beginning again
    assert len(sampler) == sampler.num_samples_per_rank


def test_per_symbol_balances_symbols_and_uniform_follows_windows(ds):
    counts = ds.window_counts_per_symbol
    n = 20000
    per_symbol = WindowSampler(ds, "per_symbol", n, seed=1)
    uniform = WindowSampler(ds, "uniform", n, seed=1)
    sym_of = np.repeat(np.arange(ds.num_symbols), counts)
    balanced = np.bincount(sym_of[list(per_symbol)], minlength=ds.num_symbols) / n
    proportional = np.bincount(sym_of[list(uniform)], minlength=ds.num_symbols) / n
    np.testing.assert_allclose(balanced, 0.25, atol=0.02)
    np.testing.assert_allclose(proportional, counts / counts.sum(), atol=0.02)
    # within a symbol every window is reachable
    short = int(np.argmin(counts))
    picked = np.array(list(per_symbol))[sym_of[list(per_symbol)] == short]
    assert len(np.unique(picked)) == counts[short]


def test_sequential_is_fixed_even_and_unpadded(ds):
    every = WindowSampler(ds, "sequential", None, seed=0)
    assert list(every) == list(range(len(ds)))
    subset = WindowSampler(ds, "sequential", 10, seed=0)
    picked = list(subset)
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] == len(ds) - 1
    gaps = np.diff(picked)
    assert gaps.min() >= (len(ds) - 1) // 9 - 1 and gaps.max() <= (len(ds) - 1) // 9 + 1
    subset.set_epoch(7)
    assert list(subset) == picked
    shards = [list(WindowSampler(ds, "sequential", 10, 0, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(i for s in shards for i in s) == picked


def test_bad_arguments(ds):
    with pytest.raises(DataError, match="sampling: 'random'"):
        WindowSampler(ds, "random")
    with pytest.raises(DataError, match="rank"):
        WindowSampler(ds, "uniform", 10, rank=2, world_size=2)
    with pytest.raises(DataError, match="smaller than world_size"):
        WindowSampler(ds, "uniform", 3, world_size=4)


def test_dataloader_workers_get_different_samples(ds):
    sampler = WindowSampler(ds, "uniform", 64, seed=11)
    sampler.set_epoch(0)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, sampler=sampler, num_workers=2, collate_fn=collate_windows
    )
    xs, stamps = zip(*list(loader))
    x, stamp = torch.cat(xs), torch.cat(stamps)
    ex, es = ds.__getitems__(list(sampler))
    torch.testing.assert_close(x, ex, rtol=0, atol=0)
    torch.testing.assert_close(stamp, es, rtol=0, atol=0)
    # the two workers' batches differ (the public dataset repeats one stream per worker)
    assert not torch.equal(xs[0], xs[1])
    assert len({tuple(b.flatten()[:20].tolist()) for b in xs}) == len(xs)


def test_splits_build_the_configured_samplers(tmp_path):
    cfg = TrainConfig(
        demo_symbols=2,
        demo_length=300,
        lookback_window=20,
        predict_window=5,
        sampling="per_symbol",
        train_samples_per_epoch=40,
        val_samples=7,
        seed=3,
    )
    splits = build_datasets(cfg)
    train = splits.train_sampler(cfg, rank=1, world_size=2)
    assert train.mode == "per_symbol" and len(train) == 20 and train.seed == 3
    val = splits.eval_sampler(cfg)
    assert val.mode == "sequential" and len(val) == 7
    assert len(splits.eval_sampler(cfg, "test")) == 7


class _Counts:
    """Only what the sampler reads from a dataset: its length and windows per symbol."""

    def __init__(self, counts: list[int]):
        self.window_counts_per_symbol = counts

    def __len__(self) -> int:
        return int(sum(self.window_counts_per_symbol))


@pytest.mark.parametrize(
    ("mode", "head", "digest"),
    [
        ("uniform", [561, 522, 1433, 1341, 554, 479, 1127, 1533], "6e49b9c6b5dcfb3f"),
        ("per_symbol", [500, 501, 1753, 1756, 501, 502, 1504, 1753], "a02ad4bb738568c8"),
    ],
)
def test_epoch_order_is_pinned(mode, head, digest):
    """The draw recorded before the sampler stopped building Python lists: resumes of runs
    started by an older version continue with the same samples."""
    import hashlib

    s = WindowSampler(_Counts([500, 3, 0, 1200, 77]), mode, 1000, seed=-7, rank=1, world_size=3)
    s.set_epoch(4, consumed=10)
    drawn = list(s)
    assert len(drawn) == 323 and drawn[:8] == head
    assert hashlib.sha256(np.asarray(drawn, np.int64).tobytes()).hexdigest()[:16] == digest


@pytest.mark.parametrize(("mode", "bytes_a_draw"), [("uniform", 12), ("per_symbol", 28)])
def test_an_epoch_costs_about_an_int64_array_not_a_python_list(mode, bytes_a_draw):
    """2M draws: the old list of Python ints peaked above 40 bytes a draw; the epoch is now one
    int64 array (8 bytes; per_symbol's draw needs two more while it is computed)."""
    import tracemalloc

    n = 2_000_000
    s = WindowSampler(_Counts([n // 2, n // 4, n // 4]), mode, num_samples=n, seed=1)
    tracemalloc.start()
    try:
        it = iter(s)
        first = [next(it) for _ in range(5)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == s.rank_indices()[:5].tolist()
    assert peak < bytes_a_draw * n, f"peak {peak / n:.1f} bytes a draw"
