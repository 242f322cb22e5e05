"""Benchmark the data path: window extraction (``--part loader``) and the on-disk store
(``--part store``).

loader: builds demo data (default 50 symbols x 5000 rows), then times
  * ours: ``KlineWindowDataset.__getitems__`` on batches of 50 random windows, and
  * baseline: the public recipe per sample (``df.iloc`` window, mean/std of the lookback,
    normalise, clip, ``torch.from_numpy``) followed by ``torch.stack`` per batch,
on the same windows, and reports windows/s, the speed-up, and the dataset memory against
the raw float32 size.

store: synthetic 5-minute bars as Parquet (one file per symbol) of ``--sizes`` rows; for each
size a fresh process builds the cache (time, peak RSS, cache size) and another one hits it
(time, against the rebuild); then 1, 2 and 4 processes (``--ranks``) map one cache at once and
each touches every row: RSS and PSS per process from ``/proc/<pid>/smaps_rollup`` (PSS splits
shared page-cache pages between the processes mapping them). With ``--old-tree`` (a checkout of
the code before the store) the old path is measured in the same run too, for the builds up to
``--old-max`` rows and for the ranks. Not a test; run ``python scripts/benchmark_data.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("--part", choices=["loader", "store", "all"], default="loader")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--length", type=int, default=5000)
    parser.add_argument("--lookback", type=int, default=90)
    parser.add_argument("--predict", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=200, help="batches timed for ours")
    parser.add_argument("--baseline-batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    store = parser.add_argument_group("store")
    store.add_argument("--sizes", default="1M,5M,20M,50M", help="rows per data set (k/M)")
    store.add_argument("--rows-per-symbol", type=int, default=120_000, help="10 years of 5-min")
    store.add_argument("--ranks", default="1,2,4", help="processes that map one cache")
    store.add_argument("--ranks-size", default="20M,50M", help="the sizes the ranks read")
    store.add_argument("--old-ranks-max", default="20M", help="largest size old ranks read")
    store.add_argument("--old-tree", help="a checkout of the code before the store")
    store.add_argument("--old-max", default="5M", help="largest size built the old way too")
    store.add_argument("--workdir", help="data and caches (default: a temporary folder)")
    store.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        return _child(*args.child)
    if args.part in ("loader", "all"):
        loader_benchmark(args)
    if args.part in ("store", "all"):
        store_benchmark(args)


def loader_benchmark(args: argparse.Namespace) -> None:
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


# ---- the store ----
def _rows(text: str) -> int:
    scale = {"k": 10**3, "M": 10**6}.get(text.strip()[-1:], 1)
    return int(float(text.strip().rstrip("kM")) * scale)


def _write_pool(pool: Path, symbols: int, rows: int, seed: int) -> list[Path]:
    """``symbols`` Parquet files of ``rows`` 5-minute A-share bars (09:30-15:00), made once."""
    from kronos_engine.data.demo import demo_timestamps

    pool.mkdir(parents=True, exist_ok=True)
    stamps = demo_timestamps(rows, "5min")
    files = []
    for k in range(symbols):
        path = pool / f"SYM{k:05d}.parquet"
        files.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, k])
        close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, rows)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0.0, 0.001, rows))
        volume = rng.integers(100, 100_000, rows).astype(np.float64)
        frame = pd.DataFrame({
            "timestamps": stamps, "open": open_, "close": close, "volume": volume,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread), "amount": volume * close,
        })  # fmt: skip
        frame.to_parquet(path.with_suffix(".tmp"), index=False)
        os.replace(path.with_suffix(".tmp"), path)
    return files


def _spec(data: Path, cache: Path) -> dict:
    return dict(
        data_source="csv", data_path=str(data), cache_dir=str(cache), freq="5min",
        lookback_window=90, predict_window=10, split_ratios=[0.8, 0.1, 0.1],
    )  # fmt: skip


def _child(mode: str, spec_json: str) -> None:
    """One measured process: ``build``/``hit`` times ``build_datasets``; ``rank`` maps the
    cache, touches every row, says ``ready`` and waits for its stdin to close."""
    t0 = time.perf_counter()
    from kronos_engine.data import DataSpec, build_datasets  # new or --old-tree code

    spec = DataSpec.from_mapping(json.loads(spec_json))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t1 = time.perf_counter()
    splits = build_datasets(spec)
    seconds = time.perf_counter() - t1
    if mode == "rank":
        for dataset in (splits.train, splits.val, splits.test):
            values, stamps = dataset.store.values, dataset.store.stamps
            for i in range(0, len(values), 1 << 20):
                float(values[i : i + (1 << 20)].sum()) + int(stamps[i : i + (1 << 20)].sum())
        print("ready", flush=True)
        sys.stdin.read()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "seconds": seconds, "import_s": t1 - t0, "peak_rss": peak, "rss_after_import": base_rss,
        "cache": splits.summary["cache"], "rows": sum(splits.summary["rows"].values()),
    }), flush=True)  # fmt: skip


def _run_child(mode: str, spec: dict, tree: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--child", mode, json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _smaps(pid: int, root: str) -> tuple[int, int, int]:
    """RSS and PSS of a process (``smaps_rollup``) and the PSS of its mappings under ``root``
    (the cache files: their shared pages split between the processes mapping them)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    store, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and not head[0].endswith(":"):  # a mapping's first line: range perms ... path
            inside = len(head) >= 6 and head[5].startswith(root)
        elif inside and head[0] == "Pss:":
            store += int(head[1]) * 1024
    return fields["Rss"], fields["Pss"], store


def _ranks(n: int, spec: dict, tree: str | None) -> list[tuple[int, int, int]]:
    """RSS and PSS of ``n`` processes mapping one cache at the same time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--child", "rank", json.dumps(spec)]
    procs = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    memory = [_smaps(proc.pid, spec["cache_dir"]) for proc in procs]
    for proc in procs:
        proc.communicate("")
    return memory


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def store_benchmark(args: argparse.Namespace) -> None:
    sizes = [_rows(s) for s in args.sizes.split(",") if s.strip()]
    per = args.rows_per_symbol
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kronos-bench-"))
    pool = _write_pool(work / "pool", max(math.ceil(r / per) for r in sizes), per, args.seed)
    report: dict = {"rows_per_symbol": per, "builds": [], "ranks": {}}
    specs = {}
    for rows in sizes:
        data = work / f"data_{rows}"
        if not data.exists():
            data.mkdir()
            for path in pool[: math.ceil(rows / per)]:
                (data / path.name).symlink_to(path)
        for tree, label in [(None, "new"), (args.old_tree, "old")]:
            if label == "old" and (not tree or rows > _rows(args.old_max)):
                continue
            cache = work / f"cache_{label}_{rows}"
            shutil.rmtree(cache, ignore_errors=True)
            spec = _spec(data, cache)
            built = _run_child("build", spec, tree)
            hit = _run_child("hit", spec, tree)
            assert (built["cache"], hit["cache"]) == ("built", "hit")
            row = {
                "path": label, "rows": built["rows"], "build_s": round(built["seconds"], 2),
                "peak_rss_gb": round(built["peak_rss"] / 2**30, 3),
                "rss_after_import_gb": round(built["rss_after_import"] / 2**30, 3),
                "cache_gb": round(_du(cache) / 2**30, 3), "hit_s": round(hit["seconds"], 3),
                "rebuild_over_hit": round(built["seconds"] / hit["seconds"], 1),
            }  # fmt: skip
            report["builds"].append(row)
            print(json.dumps(row), flush=True)
            specs[(label, rows)] = spec
    for size in args.ranks_size.split(","):
        ranks_rows = _rows(size)
        for label, tree in [("new", None), ("old", args.old_tree)]:
            spec = specs.get((label, ranks_rows))
            if label == "old" and (not tree or ranks_rows > _rows(args.old_ranks_max)):
                continue
            if spec is None:  # a cache of this size for reading only
                spec = _spec(work / f"data_{ranks_rows}", work / f"cache_{label}_{ranks_rows}")
                _run_child("build", spec, tree)
            for n in [int(x) for x in args.ranks.split(",")]:
                memory = _ranks(n, spec, tree)
                entry = {
                    "rss_gb": [round(r / 2**30, 3) for r, _, _ in memory],
                    "pss_gb": [round(p / 2**30, 3) for _, p, _ in memory],
                    "total_pss_gb": round(sum(p for _, p, _ in memory) / 2**30, 3),
                    "total_mapped_store_pss_gb": round(sum(m for _, _, m in memory) / 2**30, 3),
                }
                report["ranks"].setdefault(f"{label} {size}", {})[n] = entry
                print(json.dumps({"path": label, "rows": size, "ranks": n, **entry}), flush=True)
    print(json.dumps(report, indent=1))
    _targets(report, sizes)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _targets(report: dict, sizes: list[int]) -> None:
    new = [b for b in report["builds"] if b["path"] == "new"]
    for label, ranks in report["ranks"].items():
        if 1 in ranks and 4 in ranks:
            ratio = ranks[4]["total_pss_gb"] / ranks[1]["total_pss_gb"]
            line = f"{label}: total PSS 4 ranks / 1 rank: {ratio:.2f} (target <= 1.5)"
            if ranks[1]["total_mapped_store_pss_gb"]:  # the old code's copies are not mapped
                data = ranks[4]["total_mapped_store_pss_gb"] / ranks[1]["total_mapped_store_pss_gb"]
                line += f"; the mapped data's own PSS, 4 ranks / 1 rank: {data:.2f}"
            print(line)
    big = [b for b in new if b["rows"] >= 0.9 * 50_000_000]
    if big:
        print(f"50M-row build peak RSS: {big[0]['peak_rss_gb']} GB (target < 1.5)")
    for b in new:
        print(f"{b['rows']} rows: rebuild / hit = {b['rebuild_over_hit']}x (target >= 10)")


if __name__ == "__main__":
    main()
