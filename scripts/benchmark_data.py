"""Benchmark window extraction + collation against a per-sample pandas baseline.

Builds demo data (default 50 symbols x 5000 rows), then times
  * ours: ``KlineWindowDataset.__getitems__`` on batches of 50 random windows, and
  * baseline: the public recipe per sample (``df.iloc`` window, mean/std of the lookback,
    normalise, clip, ``torch.from_numpy``) followed by ``torch.stack`` per batch,
on the same windows, and reports windows/s, the speed-up, and the dataset memory against
the raw float32 size. Not a test; run ``python scripts/benchmark_data.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch

from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.data import FEATURES, TIME_FEATURES, KlineWindowDataset, generate_demo_frames


def baseline_batches(
    frames: dict[str, pd.DataFrame], picks, lookback: int, predict: int, clip: float
):
    """Per-sample pandas windows, as in the public fine-tuning dataset."""
    window = lookback + predict + 1
    for batch in picks:
        xs, stamps = [], []
        for symbol, start in batch:
            win = frames[symbol].iloc[start : start + window]
            x = win[list(FEATURES)].values.astype(np.float32)
            stamp = win[list(TIME_FEATURES)].values.astype(np.float32)
            mean, std = np.mean(x[:lookback], axis=0), np.std(x[:lookback], axis=0)
            x = np.clip((x - mean) / (std + 1e-5), -clip, clip)
            xs.append(torch.from_numpy(x))
            stamps.append(torch.from_numpy(stamp))
        yield torch.stack(xs), torch.stack(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--length", type=int, default=5000)
    parser.add_argument("--lookback", type=int, default=90)
    parser.add_argument("--predict", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=200, help="batches timed for ours")
    parser.add_argument("--baseline-batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    frames = generate_demo_frames(args.symbols, args.length, "day", seed=args.seed)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = KlineWindowDataset.from_frames(frames, args.lookback, args.predict)
    build_s = time.perf_counter() - t0

    # the baseline also gets its time features precomputed as columns, as in the public code
    pandas_frames = {}
    for symbol, frame in frames.items():
        ts = pd.DatetimeIndex(frame["timestamps"])
        extra = dict(
            minute=ts.minute, hour=ts.hour, weekday=ts.day_of_week, day=ts.day, month=ts.month
        )
        pandas_frames[symbol] = frame.assign(**extra)

    rng = np.random.default_rng(args.seed)
    total = args.batches * args.batch
    indices = rng.integers(0, len(ds), size=total)
    batches = indices.reshape(args.batches, args.batch)
    offsets = np.concatenate([[0], np.cumsum(ds.window_counts_per_symbol)])
    sym = np.searchsorted(offsets, indices, side="right") - 1
    picks = [
        [
            (ds.symbols[s], int(i - offsets[s]))
            for s, i in zip(sym[b : b + args.batch], indices[b : b + args.batch])
        ]
        for b in range(0, total, args.batch)
    ]

    # correctness: both paths give the same batch
    ours_x, ours_s = ds.__getitems__(batches[0].tolist())
    base_x, base_s = next(
        baseline_batches(pandas_frames, picks[:1], args.lookback, args.predict, 5.0)
    )
    max_diff = float((ours_x - base_x).abs().max())
    assert torch.equal(ours_s, base_s) and max_diff < 1e-3, max_diff

    t0 = time.perf_counter()
    for batch in batches:
        ds.__getitems__(batch.tolist())
    ours_s_elapsed = time.perf_counter() - t0
    ours_rate = total / ours_s_elapsed

    n_base = args.baseline_batches
    t0 = time.perf_counter()
    for _ in baseline_batches(pandas_frames, picks[:n_base], args.lookback, args.predict, 5.0):
        pass
    base_elapsed = time.perf_counter() - t0
    base_rate = n_base * args.batch / base_elapsed

    rows = ds.store.values.shape[0]
    raw_bytes = rows * len(FEATURES) * 4
    report = {
        "data": f"{args.symbols} symbols x {args.length} rows, window {ds.window_len}, batch {args.batch}",
        "windows": len(ds),
        "generate_s": round(gen_s, 3),
        "build_s": round(build_s, 3),
        "ours_windows_per_s": round(ours_rate),
        "pandas_windows_per_s": round(base_rate),
        "speedup": round(ours_rate / base_rate, 1),
        "max_abs_diff_vs_pandas": max_diff,
        "dataset_bytes": ds.nbytes,
        "raw_float32_bytes": raw_bytes,
        "memory_ratio": round(ds.nbytes / raw_bytes, 3),
    }
    print(json.dumps(report, indent=1))
    ok = report["speedup"] >= 20 and report["memory_ratio"] <= 1.5
    print("targets (>= 20x faster, <= 1.5x memory):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
