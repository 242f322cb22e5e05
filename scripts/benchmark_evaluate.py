"""Rolling-evaluation speed: the array core against the DataFrame-per-origin path it replaced,
in one run on one machine, with the two outputs compared for identity.

    python scripts/benchmark_evaluate.py                        # tiny predictor, CPU
    python scripts/benchmark_evaluate.py --preset small --origins 64
    python scripts/benchmark_evaluate.py --sample_count 4 --threads 2

`run_rolling` now hands each forecaster the store's float32 rows and epoch seconds
(`forecast_arrays`). The baseline below is what it did before: one DataFrame, one stamp Series
and one DatetimeIndex per origin, through `predict_batch` (which reads them back into numpy).
It lives only here, as the "before" of this benchmark. Weights are random (tokenizer `tiny`
for the `tiny` predictor, `base` otherwise): speed and exactness do not depend on training.

    python scripts/benchmark_evaluate.py --bookkeeping 300 1000 2000

`--bookkeeping`: the per-symbol metrics table (`MetricAccumulator.by_symbol`) for that many
symbols (`--dates` cross-sections each), against the per-symbol filter it replaced
(`by_symbol_filtered`, kept only here), with the two tables compared. (`--nprocs` for evaluate
and predict: `scripts/benchmark_forecast.py --processes`.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.data import KlineWindowDataset, generate_demo_frames
from kronos_engine.data.timeutil import NS_PER_SECOND
from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.baselines import DriftForecaster, NaiveForecaster
from kronos_engine.evaluation.origins import plan_origins, subset_by_date
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
from kronos_engine.evaluation.scoring import Batch, MetricAccumulator
from kronos_engine.forecasting import KronosPredictor, SamplingOptions
from kronos_engine.forecasting.forecast import COLUMNS, quantile_column
from kronos_engine.models import build_predictor, build_tokenizer

CLOSE = COLUMNS.index("close")
Result = tuple[MetricAccumulator, list[pd.DataFrame]]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    p.add_argument("--preset", default="tiny", help="predictor preset (tiny, mini, small, base)")
    p.add_argument("--symbols", type=int, default=8)
    p.add_argument("--length", type=int, default=400, help="bars per demo symbol")
    p.add_argument("--lookback", type=int, default=64)
    p.add_argument("--pred_len", type=int, default=8)
    p.add_argument("--origins", type=int, default=256, help="origins evaluated (evenly spaced)")
    p.add_argument("--sample_count", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_context", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=1, help="best of this many timings")
    p.add_argument("--bookkeeping", type=int, nargs="+", metavar="SYMBOLS",
                   help="time the per-symbol metrics for these symbol counts instead")  # fmt: skip
    p.add_argument("--dates", type=int, default=20, help="origins per symbol (--bookkeeping)")
    return p.parse_args(argv)


def dataframe_path(store, origins, forecasters, opts: ForecastOptions) -> Result:
    """The rolling evaluation as it was: DataFrames per origin through `predict_batch`."""
    acc, tables = MetricAccumulator(), []
    lookback, h, s = opts.lookback, opts.pred_len, opts.sampling
    steps = np.arange(h, dtype=np.int64)
    for start in range(0, len(origins), opts.batch_size):
        part = origins.take(np.arange(start, min(start + opts.batch_size, len(origins))))
        hist_rows = part.row[:, None] - np.arange(lookback - 1, -1, -1, dtype=np.int64)
        target_rows = part.row[:, None] + 1 + steps
        hist_ns = store.stamps[hist_rows] * NS_PER_SECOND
        target_ns = store.stamps[target_rows] * NS_PER_SECOND
        values = store.values[hist_rows].astype(np.float64)  # (B, L, 6)
        frames = [pd.DataFrame(v, columns=COLUMNS) for v in values]
        x_stamps = [pd.Series(t.astype("datetime64[ns]")) for t in hist_ns]
        y_stamps = [pd.DatetimeIndex(t.astype("datetime64[ns]")) for t in target_ns]
        close_hist = values[:, :, CLOSE]
        common = dict(
            symbols=[store.symbols[i] for i in part.symbol],
            origin_ns=hist_ns[:, -1],
            target_ns=target_ns,
            close_true=store.values[target_rows, CLOSE].astype(np.float64),
            close_origin=close_hist[:, -1],
            scale=M.mase_scale(close_hist),
        )
        for name, forecaster in forecasters.items():
            out, samples = forecaster.predict_batch(
                frames, x_stamps, y_stamps, h, T=s.T, top_k=s.top_k, top_p=s.top_p,
                sample_count=s.sample_count, verbose=False,
                quantiles=list(opts.quantiles) or None, return_samples=True, seed=s.seed,
                keys=common["symbols"],
            )  # fmt: skip
            close_pred = np.stack([f["close"].to_numpy(np.float64) for f in out])
            quantiles = {
                q: np.stack([f[quantile_column("close", q)].to_numpy(np.float64) for f in out])
                for q in opts.quantiles
            }
            crps = None
            if s.sample_count > 1:
                paths = np.asarray(samples)[..., CLOSE].astype(np.float64)
                crps = M.crps_ensemble(np.moveaxis(paths, 1, -1), common["close_true"])
            batch = Batch(name, close_pred=close_pred, quantiles=quantiles, crps=crps, **common)
            acc.add(batch)
            tables.append(batch.table())
    return acc, tables


def array_path(store, origins, forecasters, opts: ForecastOptions) -> Result:
    """`run_rolling` today: the array core."""
    tables: list[pd.DataFrame] = []
    acc = run_rolling(store, origins, forecasters, opts, sink=tables.append, progress=False)
    return acc, tables


def timed(path, repeats: int, *args):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = path(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def identical(old: Result, new: Result) -> bool:
    """Every forecast row and every metric equal, to the bit (the rows in one order: the old
    path wrote a batch model by model, `run_rolling` origin by origin)."""
    (a, a_tables), (b, b_tables) = old, new
    keys = ["model", "symbol", "origin", "horizon"]
    ta, tb = (
        pd.concat(t, ignore_index=True).sort_values(keys, kind="stable").reset_index(drop=True)
        for t in (a_tables, b_tables)
    )
    try:
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        pd.testing.assert_frame_equal(a.by_symbol(), b.by_symbol(), check_exact=True)
    except AssertionError:
        return False
    oa, ob = a.overall(), b.overall()
    return oa.keys() == ob.keys() and all(
        np.array_equal(list(oa[m].values()), list(ob[m].values()), equal_nan=True) for m in oa
    )


def by_symbol_filtered(acc: MetricAccumulator) -> pd.DataFrame:
    """`MetricAccumulator.by_symbol` as it was: each symbol's horizon returns found by a filter
    over every origin of its model (quadratic in the symbols). Only the "before" here."""
    rows = []
    returns = {m: acc.horizon_returns(m) for m in acc.models}
    for (model, symbol), sums in acc.sums.items():
        r = returns[model][returns[model].symbol == symbol]
        direction = M.direction_accuracy(r["pred_return"], r["true_return"])
        rows.append({"model": model, "symbol": symbol, **acc._values(sums, direction, len(r))})
    table = pd.DataFrame(rows)
    naive = table[table.model == "naive"].set_index("symbol")["mae"]
    table["skill"] = 1.0 - table["mae"] / table["symbol"].map(naive)
    table.loc[~(table["symbol"].map(naive) > 0), "skill"] = np.nan
    return table.sort_values(["symbol", "model"], kind="stable").reset_index(drop=True)


def synthetic_accumulator(symbols: int, dates: int = 4, h: int = 5) -> MetricAccumulator:
    """Three models' forecasts of `dates` cross-sections of `symbols` symbols, 64 a batch."""
    rng = np.random.default_rng(0)
    acc = MetricAccumulator()
    symbol = np.tile(np.arange(symbols), dates)
    origin = np.repeat(np.arange(dates), symbols).astype(np.int64) * 86_400 * NS_PER_SECOND
    true = 100 + rng.normal(0, 1, (symbol.size, h)).cumsum(axis=1)
    for start in range(0, symbol.size, 64):
        i = np.arange(start, min(symbol.size, start + 64))
        for model in ("kronos", "naive", "drift"):
            acc.add(Batch(model, [f"S{s:05d}" for s in symbol[i]], origin[i],
                          np.zeros((i.size, h), np.int64), true[i] + rng.normal(0, 1, (i.size, h)),
                          true[i], true[i, 0] - 0.5, np.abs(rng.normal(1, 0.1, i.size))))  # fmt: skip
    return acc


def bookkeeping(counts: list[int], dates: int) -> None:
    header = ("symbols", "origins", "rows", "filtered_s", "linear_s", "speedup", "identical")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n in counts:
        acc = synthetic_accumulator(n, dates)
        old, t_old = timed(by_symbol_filtered, 1, acc)
        new, t_new = timed(MetricAccumulator.by_symbol, 1, acc)
        try:
            pd.testing.assert_frame_equal(old, new, check_exact=True)
            same = True
        except AssertionError:
            same = False
        origins = len(acc.horizon_returns("naive"))
        row = (n, origins, len(new), f"{t_old:.2f}", f"{t_new:.3f}", f"{t_old / t_new:.0f}x", same)
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bookkeeping:
        bookkeeping(args.bookkeeping, args.dates)
        return 0
    torch.manual_seed(0)
    tok = build_tokenizer("tiny" if args.preset == "tiny" else "base")
    model = KronosPredictor(build_predictor(args.preset), tok, "cpu", args.max_context)
    frames = generate_demo_frames(args.symbols, args.length, "day", seed=7)
    store = KlineWindowDataset.from_frames(frames, args.lookback, args.pred_len).store
    every = plan_origins(store, args.lookback, args.pred_len)
    origins = subset_by_date(store, every, args.origins)
    sampling = SamplingOptions(sample_count=args.sample_count, seed=0)
    opts = ForecastOptions(args.pred_len, args.lookback, sampling, args.batch_size)
    groups = {
        "naive+drift": {"naive": NaiveForecaster(), "drift": DriftForecaster()},
        f"kronos-{args.preset}": {"kronos": model},
        f"kronos-{args.preset}+naive+drift": {
            "kronos": model, "naive": NaiveForecaster(), "drift": DriftForecaster()
        },
    }  # fmt: skip
    print(
        f"# predictor {args.preset}, CPU threads {torch.get_num_threads()}, {len(origins)} "
        f"origins of {len(store.symbols)} symbols, lookback {args.lookback}, pred_len "
        f"{args.pred_len}, sample_count {args.sample_count}, batch_size {args.batch_size}",
        flush=True,
    )
    warm_up = origins.take(np.arange(min(8, len(origins))))
    array_path(store, warm_up, groups[f"kronos-{args.preset}"], opts)
    header = ("forecasters", "origins", "dataframes_s", "arrays_s", "speedup", "identical")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, forecasters in groups.items():
        inputs = (store, origins, forecasters, opts)
        old, t_old = timed(dataframe_path, args.repeats, *inputs)
        new, t_new = timed(array_path, args.repeats, *inputs)
        row = (
            name, len(origins), f"{t_old:.3f}", f"{t_new:.3f}", f"{t_old / t_new:.2f}x",
            identical(old, new),
        )  # fmt: skip
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
