"""Rolling-origin evaluation: every forecaster on every origin of a split (`evaluation.origins`),
in batches, scored as they come (`evaluation.scoring`).

Memory stays bounded on long splits: origins are forecast `batch_size` at a time, each batch's
rows go straight to a `sink` (the Parquet writer) and into `MetricAccumulator`, which keeps
only per-symbol sums and one horizon return per origin (for IC and direction accuracy).

Across processes (`shard`, `forecasting.shards`) each rank forecasts every `world`-th batch and
rank 0 scores and writes them all in batch order: the same files as one process.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kronos_engine.data.timeutil import NS_PER_SECOND
from kronos_engine.data.windows import WindowStore
from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.baselines import Forecaster
from kronos_engine.evaluation.origins import Origins
from kronos_engine.evaluation.scoring import Batch, MetricAccumulator
from kronos_engine.evaluation.volatility import historical_vol, path_vol
from kronos_engine.forecasting.forecast import COLUMNS, Forecast, quantile_column
from kronos_engine.forecasting.options import SamplingOptions, check_count, check_pred_len
from kronos_engine.forecasting.shards import Shard, in_order

CLOSE = COLUMNS.index("close")


@dataclass(init=False)
class ForecastOptions:
    """How each forecaster is asked to forecast: `pred_len` rows after `lookback` rows, in
    batches of `batch_size` origins, with the `sampling` options.

    Each value follows the forecasting rules (`forecasting.options`: a `batch_size` of 0 is
    refused, not read as 1). A forecaster with the array core samples each origin from the
    stream of (its symbol, its origin time, `sampling.seed`), so no number depends on
    `batch_size` (a `predict_batch` that takes `keys` gets them too); one whose `predict_batch`
    does not gets seed `sampling.seed + b` for batch `b` (reproducible for a given
    `batch_size`). The sampling fields may be given as keywords instead of `sampling`
    (`ForecastOptions(pred_len=4, lookback=20, seed=1)`), with the evaluation's default seed 0.
    `volatility`: also each origin's realised-volatility forecast (`evaluation.volatility`).
    """

    pred_len: int
    lookback: int
    sampling: SamplingOptions
    batch_size: int = 64
    volatility: bool = False

    def __init__(
        self,
        pred_len: int,
        lookback: int,
        sampling: SamplingOptions | None = None,
        batch_size: int = 64,
        volatility: bool = False,
        **sampling_fields: Any,
    ) -> None:
        if sampling is not None and sampling_fields:
            raise TypeError("ForecastOptions: give sampling or its fields, not both")
        self.pred_len = check_pred_len(pred_len)
        self.lookback = check_count(lookback, "lookback")
        self.sampling = (
            SamplingOptions(**{"seed": 0, **sampling_fields}) if sampling is None else sampling
        )
        self.batch_size = check_count(batch_size, "batch_size")
        self.volatility = bool(volatility)

    @property
    def quantiles(self) -> tuple[float, ...]:
        return M.EVAL_QUANTILES if self.sampling.sample_count > 1 else ()

    def batch_sampling(self, b: int) -> SamplingOptions:
        """The sampling of batch `b` for a `predict_batch`-only forecaster (seed `seed + b`;
        no seed stays unseeded)."""
        seed = self.sampling.seed
        return self.sampling.with_seed(None if seed is None else seed + b)


def iter_batches(
    store: WindowStore,
    origins: Origins,
    forecasters: Mapping[str, Forecaster],
    opts: ForecastOptions,
    progress: bool = True,
    shard: Shard | None = None,
) -> Iterator[list[Batch]]:
    """Forecast every origin with every forecaster, `opts.batch_size` origins at a time:
    each batch of origins as one `Batch` per forecaster, in the forecasters' order.

    Each forecaster gets the batch as arrays (`forecast_arrays`: the store's float32 rows and
    epoch seconds, and the symbols as `keys` when it takes them); one that only has
    `predict_batch`, or overrides it, gets DataFrames (and the keys likewise). With a `shard` of
    several processes, this rank forecasts its batches and rank 0 yields every batch in order
    (others: none).
    """
    lookback, h = opts.lookback, opts.pred_len
    steps = np.arange(h, dtype=np.int64)
    starts = range(0, len(origins), opts.batch_size)
    # decided once, not per batch: which core each forecaster has, and whether it takes keys
    cores = {name: _array_core(f) for name, f in forecasters.items()}
    keyed = {
        name: _takes_keys(core if core is not None else forecasters[name].predict_batch)
        for name, core in cores.items()
    }

    def one_batch(b: int) -> list[Batch]:
        start = starts[b]
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
        if opts.volatility:
            common["vol_hist"] = historical_vol(close_hist, h)
        out = []
        for name, forecaster in forecasters.items():
            core = cores[name]
            if core is not None:
                keys = {"keys": common["symbols"]} if keyed[name] else {}
                forecast = core(*inputs, h, opts.sampling, **keys)
                out.append(_batch(name, forecast, opts, common))
            else:
                keys = common["symbols"] if keyed[name] else None
                sampling = opts.sampling if keys is not None else opts.batch_sampling(b)
                batch = _frames_batch(name, forecaster, inputs, h, sampling, opts, common, keys)
                out.append(batch)
        return out

    main = shard is None or shard.is_main
    total = len(origins) * len(forecasters)
    with tqdm(
        total=total, desc="evaluate", unit="forecast", disable=not (progress and main)
    ) as bar:
        for batches in in_order(len(starts), one_batch, shard):
            bar.update(sum(len(batch.symbols) for batch in batches))
            yield batches


def _takes_keys(method: Callable[..., Any]) -> bool:
    """Whether a forecaster's method takes the origins' symbols (`keys=`, or any keyword) for
    its sampling streams."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "keys" or p.kind is p.VAR_KEYWORD for p in parameters)


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
    keys: list[str] | None = None,
) -> Batch:
    """A `predict_batch`-only forecaster: one DataFrame per origin, as `KronosPredictor` takes
    (with the symbols as `keys` when it takes them)."""
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
        **({} if keys is None else {"keys": keys}),
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
    crps = vol = None
    paths = samples[..., CLOSE].astype(np.float64)  # (B, S, H)
    if opts.sampling.sample_count > 1:
        crps = M.crps_ensemble(np.moveaxis(paths, 1, -1), common["close_true"])
    if opts.volatility:
        vol = path_vol(common["close_origin"], paths)
    return Batch(
        name, close_pred=close_pred, quantiles=quantiles, crps=crps, vol_pred=vol, **common
    )


def run_rolling(
    store: WindowStore,
    origins: Origins,
    forecasters: Mapping[str, Forecaster],
    opts: ForecastOptions,
    sink: Callable[[pd.DataFrame], None] | None = None,
    progress: bool = True,
    shard: Shard | None = None,
) -> MetricAccumulator:
    """Forecast all origins with all forecasters; each batch's rows go to `sink` (on rank 0
    of a `shard` of several processes; the other ranks' accumulators stay empty)."""
    if not len(origins):
        raise ValueError("no origin to evaluate")
    acc = MetricAccumulator()
    for batches in iter_batches(store, origins, forecasters, opts, progress, shard):
        for batch in batches:
            acc.add(batch)
        if sink is not None:
            sink(origin_major(batches))
    return acc


def origin_major(batches: list[Batch]) -> pd.DataFrame:
    """The rows of one batch of origins, every forecaster's: origin by origin, then model
    and horizon step, so the rows' order across batches does not depend on the batch size
    (model by model within each batch, it did)."""
    tables = [batch.table() for batch in batches]
    b, h = batches[0].close_pred.shape
    model, origin, step = np.ix_(np.arange(len(tables)), np.arange(b), np.arange(h))
    order = (model * b * h + origin * h + step).transpose(1, 0, 2)  # (origin, model, step)
    return pd.concat(tables, ignore_index=True).take(order.reshape(-1)).reset_index(drop=True)
