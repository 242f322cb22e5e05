"""Baseline forecasters with `KronosPredictor`'s array core (`forecast_arrays`) and its
`predict_batch` signature, so the rolling evaluation has one code path for models and baselines.

* `naive`: every future bar repeats the last observed bar (the random-walk forecast).
* `drift`: the last bar plus ``h`` times the average one-step change over the history
  (the random walk with drift: a straight line through the first and last observed bar).

Both are deterministic: with ``sample_count > 1`` every sample path is the point forecast, so
their CRPS equals their MAE and their intervals have zero width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from kronos_engine.forecasting.forecast import (
    Forecast,
    forecast_frames_of,
)
from kronos_engine.forecasting.inputs import ohlcv_values, resolve_pred_len
from kronos_engine.forecasting.options import SamplingOptions, check_quantiles
from kronos_engine.forecasting.timestamps import as_datetime_index, infer_future_stamps


class Forecaster(Protocol):
    """What the rolling evaluation needs from a model: `KronosPredictor.forecast_arrays`.

    (`run_rolling` also takes an object with only `predict_batch`, or one whose class
    overrides `predict_batch` below its `forecast_arrays`, and calls it through DataFrames.)
    """

    def forecast_arrays(
        self,
        values: np.ndarray,
        x_seconds: np.ndarray,
        y_seconds: np.ndarray,
        pred_len: int,
        options: SamplingOptions,
        *,
        keys: Sequence[Any] | None = None,  # the origins' symbols, for per-series streams
    ) -> Forecast: ...


class _PointBaseline:
    """A deterministic forecaster: subclasses give the ``(pred_len, 6)`` path of one history."""

    name = "baseline"
    # Sample paths are copies of one line: no spread, so no volatility forecast of their own
    # (`evaluation.volatility` gives them the historical one) and no test-time scaling.
    deterministic = True

    def path(self, values: np.ndarray, pred_len: int) -> np.ndarray:
        raise NotImplementedError

    def forecast_arrays(
        self,
        values: np.ndarray | Sequence[np.ndarray],
        x_seconds: Any,
        y_seconds: Any,
        pred_len: int,
        options: SamplingOptions,
        *,
        keys: Sequence[Any] | None = None,
    ) -> Forecast:
        """`KronosPredictor.forecast_arrays` for a deterministic forecast: the stamps, keys and
        sampling are ignored but `sample_count`, whose samples are copies of the one path
        (float32 bars, the path computed in float64)."""
        bars = [np.asarray(v, dtype=np.float32).astype(np.float64) for v in values]
        paths = np.stack([self.path(v, int(pred_len)).astype(np.float32) for v in bars])
        return Forecast(np.repeat(paths[:, None], options.sample_count, axis=1), paths)

    def predict_batch(
        self,
        df_list: Sequence[pd.DataFrame],
        x_timestamp_list: Sequence[Any] | None = None,
        y_timestamp_list: Sequence[Any] | None = None,
        pred_len: int | None = None,
        *,
        sample_count: int = 1,
        quantiles: Sequence[float] | None = None,
        return_samples: bool = False,
        **sampling: Any,
    ) -> list[pd.DataFrame] | tuple[list[pd.DataFrame], np.ndarray]:
        """Same arguments and results as `KronosPredictor.predict_batch`; the sampling options
        (`T`, `top_k`, `top_p`, `seed`, `verbose`) are accepted and ignored: the forecast is
        deterministic, and its `sample_count` samples are copies of the one path."""
        n = len(df_list)
        y_list = list(y_timestamp_list) if y_timestamp_list is not None else [None] * n
        x_list = list(x_timestamp_list) if x_timestamp_list is not None else [None] * n
        pred_len = resolve_pred_len(pred_len, y_list)
        options = SamplingOptions(sample_count=sample_count)  # the rules of the API
        # A deterministic path is its own quantile at any sample count: 2 passes the count rule.
        qs = check_quantiles(quantiles, sample_count=2)
        values, indexes = [], []
        for i, (df, x, y) in enumerate(zip(df_list, x_list, y_list)):
            values.append(ohlcv_values(df, f"df_list[{i}]"))
            if y is None:
                stamps = x if x is not None else df.get("timestamps", df.index)
                y = infer_future_stamps(as_datetime_index(stamps, f"df_list[{i}]"), pred_len)
            indexes.append(y)
        forecast = self.forecast_arrays(values, None, None, pred_len, options)
        # every sample is the path, so each quantile is the path too
        frames = forecast_frames_of(forecast, indexes, qs)
        if not return_samples:
            return frames
        return frames, forecast.samples


class NaiveForecaster(_PointBaseline):
    """Every future bar is the last observed bar."""

    name = "naive"

    def path(self, values: np.ndarray, pred_len: int) -> np.ndarray:
        return np.repeat(values[-1:], pred_len, axis=0)


class DriftForecaster(_PointBaseline):
    """Last bar plus ``h`` times the mean one-step change over the history; a one-row history
    has no drift and gives the naive forecast."""

    name = "drift"

    def path(self, values: np.ndarray, pred_len: int) -> np.ndarray:
        n = len(values)
        slope = (values[-1] - values[0]) / (n - 1) if n > 1 else np.zeros(values.shape[1])
        steps = np.arange(1, pred_len + 1, dtype=np.float64)[:, None]
        return values[-1] + steps * slope


BASELINES: dict[str, type[_PointBaseline]] = {"naive": NaiveForecaster, "drift": DriftForecaster}
