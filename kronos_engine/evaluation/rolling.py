"""Rolling-origin evaluation: origins in a split, batched forecasts, streaming metrics.

A split's `WindowStore` holds each symbol's split rows plus the `lookback` rows just before
them. An *origin* is the last observed row of a forecast: the model sees the `lookback` rows
ending at the origin and nothing after it, and is scored on the `pred_len` rows after it, all
of which lie in the split. Origins start at the split's first forecastable row and repeat
every `stride` rows per symbol.

Memory stays bounded on long splits: origins are forecast `batch_size` at a time, each batch's
rows go straight to a `sink` (the Parquet writer) and into `MetricAccumulator`, which keeps
only per-symbol sums and one horizon return per origin (for IC and direction accuracy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kronos_engine.data.timeutil import NS_PER_SECOND
from kronos_engine.data.windows import WindowStore
from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.baselines import Forecaster
from kronos_engine.forecasting.options import SamplingOptions
from kronos_engine.forecasting.predictor import COLUMNS, Forecast, quantile_column

CLOSE = COLUMNS.index("close")


@dataclass(frozen=True)
class Origins:
    """Origins as global row indices into a store, with the symbol index of each."""

    symbol: np.ndarray  # int64 (n,)
    row: np.ndarray  # int64 (n,), the origin row (last observed) in the store's arrays

    def __len__(self) -> int:
        return int(self.row.size)

    def take(self, index: np.ndarray) -> Origins:
        return Origins(self.symbol[index], self.row[index])


def plan_origins(store: WindowStore, lookback: int, pred_len: int, stride: int = 1) -> Origins:
    """Every `stride`-th origin of every symbol whose lookback and horizon fit its segment.

    The first origin is the segment's row `lookback - 1`: its history is exactly the
    `lookback` rows before the split, its targets are the split's first `pred_len` rows.
    """
    if lookback < 2 or pred_len < 1 or stride < 1:
        raise ValueError(
            f"lookback must be >= 2, pred_len and stride >= 1 (got {lookback}, {pred_len}, {stride})"
        )
    symbols, rows = [], []
    for s in range(len(store.symbols)):
        start, end = int(store.row_offsets[s]), int(store.row_offsets[s + 1])
        local = np.arange(lookback - 1, end - start - pred_len, stride, dtype=np.int64)
        symbols.append(np.full(local.size, s, dtype=np.int64))
        rows.append(start + local)
    if not rows:
        return Origins(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Origins(np.concatenate(symbols), np.concatenate(rows))


def subset_by_date(store: WindowStore, origins: Origins, budget: int) -> Origins:
    """At most `budget` origins on evenly spaced dates, keeping every symbol of a chosen date
    (so cross-sectional IC stays defined). Deterministic: same store, same subset."""
    if len(origins) <= budget:
        return origins
    stamps = store.stamps[origins.row]
    dates, counts = np.unique(stamps, return_counts=True)
    per_date = len(origins) / len(dates)
    n_dates = int(min(len(dates), max(1, budget // max(1.0, per_date))))
    chosen = dates[np.unique(np.linspace(0, len(dates) - 1, n_dates).round().astype(np.int64))]
    keep = np.flatnonzero(np.isin(stamps, chosen))
    order = np.lexsort((origins.symbol[keep], stamps[keep]))
    return origins.take(keep[order][:budget])


@dataclass(init=False)
class ForecastOptions:
    """How each forecaster is asked to forecast: `pred_len` rows after `lookback` rows, in
    batches of `batch_size` origins, with the `sampling` options.

    Batch `b` samples with seed `sampling.seed + b`, so a run is reproducible for a given
    `batch_size` and every model sees the same seeds on the same origins. The sampling fields
    may be given as keywords instead of `sampling` (`ForecastOptions(pred_len=4, lookback=20,
    seed=1)`), with the evaluation's default seed 0.
    """

    pred_len: int
    lookback: int
    sampling: SamplingOptions
    batch_size: int = 64

    def __init__(
        self,
        pred_len: int,
        lookback: int,
        sampling: SamplingOptions | None = None,
        batch_size: int = 64,
        **sampling_fields: Any,
    ) -> None:
        if sampling is not None and sampling_fields:
            raise TypeError("ForecastOptions: give sampling or its fields, not both")
        self.pred_len = pred_len
        self.lookback = lookback
        self.sampling = (
            SamplingOptions(**{"seed": 0, **sampling_fields}) if sampling is None else sampling
        )
        self.batch_size = batch_size

    @property
    def quantiles(self) -> tuple[float, ...]:
        return M.EVAL_QUANTILES if self.sampling.sample_count > 1 else ()

    def batch_sampling(self, b: int) -> SamplingOptions:
        """The sampling of batch `b` (seed `seed + b`; no seed stays unseeded)."""
        seed = self.sampling.seed
        return self.sampling.with_seed(None if seed is None else seed + b)


@dataclass
class Batch:
    """One model's forecasts of one batch of origins, as arrays (B origins, H steps)."""

    model: str
    symbols: list[str]
    origin_ns: np.ndarray  # (B,) origin timestamps, int64 ns
    target_ns: np.ndarray  # (B, H)
    close_pred: np.ndarray  # (B, H)
    close_true: np.ndarray  # (B, H)
    close_origin: np.ndarray  # (B,)
    scale: np.ndarray  # (B,) MASE denominators
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)  # q -> (B, H)
    crps: np.ndarray | None = None  # (B, H)

    def table(self) -> pd.DataFrame:
        """One row per origin and horizon step (the `forecasts.parquet` layout)."""
        b, h = self.close_pred.shape
        table = {
            "model": np.full(b * h, self.model, dtype=object),
            "symbol": np.repeat(np.asarray(self.symbols, dtype=object), h),
            "origin": np.repeat(self.origin_ns, h).astype("datetime64[ns]"),
            "timestamp": self.target_ns.reshape(-1).astype("datetime64[ns]"),
            "horizon": np.tile(np.arange(1, h + 1, dtype=np.int32), b),
            "close_pred": self.close_pred.reshape(-1),
            "close_true": self.close_true.reshape(-1),
            "close_origin": np.repeat(self.close_origin, h),
            "mase_scale": np.repeat(self.scale, h),
        }
        for q, values in self.quantiles.items():
            table[quantile_column("close", q)] = values.reshape(-1)
        if self.crps is not None:
            table["crps"] = self.crps.reshape(-1)
        return pd.DataFrame(table)


def iter_batches(
    store: WindowStore,
    origins: Origins,
    forecasters: Mapping[str, Forecaster],
    opts: ForecastOptions,
    progress: bool = True,
) -> Iterator[Batch]:
    """Forecast every origin with every forecaster, `opts.batch_size` origins at a time.

    Each forecaster gets the batch as arrays (`forecast_arrays`: the store's float32 rows and
    epoch seconds); one that only has `predict_batch`, or overrides it, gets DataFrames.
    """
    lookback, h = opts.lookback, opts.pred_len
    steps = np.arange(h, dtype=np.int64)
    total = len(origins) * len(forecasters)
    with tqdm(total=total, desc="evaluate", unit="forecast", disable=not progress) as bar:
        for b, start in enumerate(range(0, len(origins), opts.batch_size)):
            part = origins.take(np.arange(start, min(start + opts.batch_size, len(origins))))
            hist_rows = part.row[:, None] - np.arange(lookback - 1, -1, -1, dtype=np.int64)
            target_rows = part.row[:, None] + 1 + steps
            inputs = (store.values[hist_rows], store.stamps[hist_rows], store.stamps[target_rows])
            close_hist = inputs[0][:, :, CLOSE].astype(np.float64)
            common = dict(
                symbols=[store.symbols[s] for s in part.symbol],
                origin_ns=inputs[1][:, -1] * NS_PER_SECOND,
                target_ns=inputs[2] * NS_PER_SECOND,
                close_true=store.values[target_rows, CLOSE].astype(np.float64),
                close_origin=close_hist[:, -1],
                scale=M.mase_scale(close_hist),
            )
            sampling = opts.batch_sampling(b)
            for name, forecaster in forecasters.items():
                core = _array_core(forecaster)
                if core is not None:
                    forecast = core(*inputs, h, sampling)
                    yield _batch(name, forecast, opts, common)
                else:
                    yield _frames_batch(name, forecaster, inputs, h, sampling, opts, common)
                bar.update(len(part))


def _array_core(forecaster: Any) -> Callable[..., Forecast] | None:
    """`forecaster.forecast_arrays`, unless it has none or its class overrides
    `predict_batch` below the class that defines `forecast_arrays` (then that override is
    what the forecaster means, and it is called)."""
    mro = type(forecaster).__mro__

    def owner(name: str) -> int | None:
        return next((i for i, cls in enumerate(mro) if name in vars(cls)), None)

    arrays, frames = owner("forecast_arrays"), owner("predict_batch")
    if arrays is None or (frames is not None and frames < arrays):
        return None
    return forecaster.forecast_arrays


def _batch(name: str, forecast: Forecast, opts: ForecastOptions, common: dict) -> Batch:
    quantiles = {q: forecast.quantile(q)[..., CLOSE].astype(np.float64) for q in opts.quantiles}
    close_pred = forecast.point[..., CLOSE].astype(np.float64)
    return _scored(name, close_pred, quantiles, forecast.samples, opts, common)


def _frames_batch(
    name: str,
    forecaster: Any,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    h: int,
    sampling: SamplingOptions,
    opts: ForecastOptions,
    common: dict,
) -> Batch:
    """A `predict_batch`-only forecaster: one DataFrame per origin, as `KronosPredictor` takes."""
    values, x_seconds, y_seconds = inputs
    frames = [pd.DataFrame(v, columns=COLUMNS) for v in values.astype(np.float64)]
    x_stamps = [pd.Series((t * NS_PER_SECOND).astype("datetime64[ns]")) for t in x_seconds]
    y_stamps = [pd.DatetimeIndex((t * NS_PER_SECOND).astype("datetime64[ns]")) for t in y_seconds]
    frames_out, samples = forecaster.predict_batch(
        frames,
        x_stamps,
        y_stamps,
        h,
        T=sampling.T,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        sample_count=sampling.sample_count,
        verbose=False,
        quantiles=list(opts.quantiles) or None,
        return_samples=True,
        seed=sampling.seed,
    )
    close_pred = np.stack([f["close"].to_numpy(np.float64) for f in frames_out])
    quantiles = {
        q: np.stack([f[quantile_column("close", q)].to_numpy(np.float64) for f in frames_out])
        for q in opts.quantiles
    }
    return _scored(name, close_pred, quantiles, np.asarray(samples), opts, common)


def _scored(
    name: str,
    close_pred: np.ndarray,
    quantiles: dict[float, np.ndarray],
    samples: np.ndarray,
    opts: ForecastOptions,
    common: dict,
) -> Batch:
    crps = None
    if opts.sampling.sample_count > 1:
        paths = samples[..., CLOSE].astype(np.float64)  # (B, S, H)
        crps = M.crps_ensemble(np.moveaxis(paths, 1, -1), common["close_true"])
    return Batch(name, close_pred=close_pred, quantiles=quantiles, crps=crps, **common)


class MetricAccumulator:
    """Running sums per (model, symbol) and per-origin horizon returns: enough for every
    metric, without keeping the forecasts."""

    SUMS = ("n", "abs", "sq", "ape", "ape_n", "scaled", "scaled_n", "crps", *M.INTERVALS)

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(self.SUMS, 0.0)
        )
        self.calibration: dict[str, dict[float, list[float]]] = defaultdict(dict)
        self.returns: dict[str, list[pd.DataFrame]] = defaultdict(list)
        self.sampled = False

    def add(self, batch: Batch) -> None:
        err = batch.close_pred - batch.close_true
        scale = np.broadcast_to(batch.scale[:, None], err.shape)
        true = batch.close_true
        for i, symbol in enumerate(batch.symbols):
            acc = self.sums[(batch.model, symbol)]
            e, t, s = err[i], true[i], scale[i]
            acc["n"] += e.size
            acc["abs"] += float(np.abs(e).sum())
            acc["sq"] += float((e**2).sum())
            nz = t != 0
            acc["ape"] += float((np.abs(e[nz]) / np.abs(t[nz])).sum())
            acc["ape_n"] += int(nz.sum())
            pos = s > 0
            acc["scaled"] += float((np.abs(e[pos]) / s[pos]).sum())
            acc["scaled_n"] += int(pos.sum())
            if batch.crps is not None:
                acc["crps"] += float(batch.crps[i].sum())
                for key, (lo, hi) in M.INTERVALS.items():
                    inside = (t >= batch.quantiles[lo][i]) & (t <= batch.quantiles[hi][i])
                    acc[key] += int(inside.sum())
        if batch.crps is not None:
            self.sampled = True
            for q, values in batch.quantiles.items():
                hits = self.calibration[batch.model].setdefault(q, [0.0, 0.0])
                hits[0] += float((true <= values).sum())
                hits[1] += true.size
        self.returns[batch.model].append(
            pd.DataFrame(
                {
                    "symbol": batch.symbols,
                    "origin": batch.origin_ns.astype("datetime64[ns]"),
                    "pred_return": M.horizon_return(batch.close_pred[:, -1], batch.close_origin),
                    "true_return": M.horizon_return(true[:, -1], batch.close_origin),
                }
            )
        )

    # ---- results ----
    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(model for model, _ in self.sums))

    def horizon_returns(self, model: str) -> pd.DataFrame:
        return pd.concat(self.returns[model], ignore_index=True)

    def daily_ic(self, model: str) -> pd.DataFrame:
        """Per-date IC and RankIC of one model's predicted horizon return."""
        r = self.horizon_returns(model)
        args = (r["origin"].to_numpy(), r["pred_return"].to_numpy(), r["true_return"].to_numpy())
        return pd.concat(
            [M.daily_ic(*args, method="pearson"), M.daily_ic(*args, method="spearman")], axis=1
        )

    def _values(self, acc: dict[str, float], returns: pd.DataFrame) -> dict[str, float]:
        n = acc["n"]
        out = {
            "mae": acc["abs"] / n,
            "rmse": float(np.sqrt(acc["sq"] / n)),
            "mape": acc["ape"] / acc["ape_n"] if acc["ape_n"] else np.nan,
            "mase": acc["scaled"] / acc["scaled_n"] if acc["scaled_n"] else np.nan,
            "direction_accuracy": M.direction_accuracy(
                returns["pred_return"], returns["true_return"]
            ),
        }
        if self.sampled:
            out["crps"] = acc["crps"] / n
            for key in M.INTERVALS:
                out[key] = acc[key] / n
        out["origins"] = float(len(returns))
        return out

    def overall(self) -> dict[str, dict[str, float]]:
        """`{model: {metric: value}}` over all symbols; `skill` against `naive`."""
        result: dict[str, dict[str, float]] = {}
        for model in self.models:
            total = dict.fromkeys(self.SUMS, 0.0)
            for (m, _), acc in self.sums.items():
                if m == model:
                    for k in self.SUMS:
                        total[k] += acc[k]
            result[model] = self._values(total, self.horizon_returns(model))
            daily = self.daily_ic(model)
            if daily.notna().any().any():
                result[model]["ic"], result[model]["icir"] = M.ic_summary(daily["ic"])
                result[model]["rank_ic"], result[model]["rank_icir"] = M.ic_summary(
                    daily["rank_ic"]
                )
        naive = result.get("naive", {}).get("mae")
        for values in result.values():
            values["skill"] = M.skill(values["mae"], naive) if naive is not None else np.nan
        return {model: _order(values) for model, values in result.items()}

    def by_symbol(self) -> pd.DataFrame:
        """One row per (model, symbol), with `skill` against naive on that symbol."""
        rows = []
        returns = {m: self.horizon_returns(m) for m in self.models}
        for (model, symbol), acc in self.sums.items():
            r = returns[model]
            rows.append(
                {"model": model, "symbol": symbol, **self._values(acc, r[r.symbol == symbol])}
            )
        table = pd.DataFrame(rows)
        naive = table[table.model == "naive"].set_index("symbol")["mae"]
        table["skill"] = 1.0 - table["mae"] / table["symbol"].map(naive)
        table.loc[~(table["symbol"].map(naive) > 0), "skill"] = np.nan
        return table.sort_values(["symbol", "model"], kind="stable").reset_index(drop=True)

    def calibration_table(self) -> pd.DataFrame:
        """Nominal quantile vs the share of actuals at or below it, per model."""
        rows = [
            {"model": model, "quantile": q, "observed": hits / n}
            for model, table in self.calibration.items()
            for q, (hits, n) in sorted(table.items())
        ]
        return pd.DataFrame(rows, columns=["model", "quantile", "observed"])


METRIC_ORDER = (
    "mae", "rmse", "mape", "mase", "skill", "direction_accuracy", "crps", "coverage_80",
    "coverage_90", "ic", "icir", "rank_ic", "rank_icir", "origins",
)  # fmt: skip


def _order(values: dict[str, float]) -> dict[str, float]:
    return {k: float(values[k]) for k in METRIC_ORDER if k in values}


def run_rolling(
    store: WindowStore,
    origins: Origins,
    forecasters: Mapping[str, Forecaster],
    opts: ForecastOptions,
    sink: Callable[[pd.DataFrame], None] | None = None,
    progress: bool = True,
) -> MetricAccumulator:
    """Forecast all origins with all forecasters; each batch's rows go to `sink`."""
    if not len(origins):
        raise ValueError("no origin to evaluate")
    acc = MetricAccumulator()
    for batch in iter_batches(store, origins, forecasters, opts, progress):
        acc.add(batch)
        if sink is not None:
            sink(batch.table())
    return acc
