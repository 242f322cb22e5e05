"""What `scripts/predict.py` forecasts: the resolved `Job` (model, data settings, windows,
output, flags) and each symbol's `History` (its last `lookback` bars, up to `--as_of`, and the
timestamps of the bars to forecast), read exactly as training reads the data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kronos_engine.cli.forecast_flags import ForecastFlags
from kronos_engine.data import iter_clean_frames
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import DataError, ForecastError
from kronos_engine.forecasting.predictor import KronosPredictor
from kronos_engine.forecasting.timestamps import infer_future_stamps


@dataclass
class Job:
    """What to forecast: the model, data settings and forecast options, resolved."""

    predictor: KronosPredictor
    data: DataSpec
    lookback: int
    pred_len: int
    output: Path
    flags: ForecastFlags
    calendar: str | None = None  # --calendar: the exchange whose sessions the future follows


@dataclass
class History:
    symbol: str
    frame: pd.DataFrame  # timestamps + six features, the last `lookback` bars
    future: pd.DatetimeIndex
    actual: pd.DataFrame | None = None  # the data's bars after the history (`--as_of`)


def parse_as_of(as_of: str | None) -> pd.Timestamp | None:
    """`--as_of` as a wall-clock time: the data's timestamps are naive wall-clock times (a UTC
    offset in the data keeps its wall time), so an offset here would compare other instants."""
    if not as_of:
        return None
    try:
        cutoff = pd.Timestamp(as_of)
    except (ValueError, TypeError, OverflowError):
        cutoff = None
    if cutoff is None or cutoff is pd.NaT:
        raise ForecastError(
            f"--as_of: '{as_of}' is not a date or datetime; use e.g. 2024-03-01 or "
            "'2024-03-01 15:00'"
        )
    if cutoff.tz is not None:
        raise ForecastError(
            f"--as_of: '{as_of}' has a time zone, but the data's timestamps are wall-clock "
            "times without one; give the wall-clock time of the data, without an offset"
        )
    return cutoff


def collect_histories(job: Job, cutoff: pd.Timestamp | None) -> tuple[list[History], list[str]]:
    """The last `lookback` bars (up to `cutoff`, `--as_of`) of each symbol and its future
    stamps (on `--calendar`'s sessions where the data stop)."""
    histories, skipped = [], []
    for symbol, frame in _clean_frames(job.data):
        rows = frame if cutoff is None else frame[frame["timestamps"] <= cutoff]
        if len(rows) < job.lookback:
            skipped.append(f"{symbol} has {len(rows)} bars, lookback is {job.lookback}")
            continue
        try:
            future = _future_stamps(frame, rows, job)
        except ForecastError as exc:
            skipped.append(f"{symbol}: {exc}")
            continue
        actual = frame.iloc[len(rows) : len(rows) + job.pred_len]
        histories.append(History(symbol, rows.iloc[-job.lookback :], future, actual))
    return histories, skipped


def _clean_frames(data: DataSpec) -> Iterator[tuple[str, pd.DataFrame]]:
    """The run's cleaned bars per symbol, with the data keys' mistakes said as forecast ones."""
    if data.data_source == "demo" and data.data_path:  # the training config's wording
        raise ForecastError(
            f"data_path: '{data.data_path}' is set but data_source is 'demo' (the built-in "
            f"synthetic data); add --data_source=csv (or qlib) to train on it"
        )
    if data.data_source != "demo" and not data.data_path:
        raise ForecastError(f"data_path: required when data_source is '{data.data_source}'")
    try:
        yield from iter_clean_frames(data)
    except DataError as exc:
        raise ForecastError(str(exc)) from None


def _future_stamps(frame: pd.DataFrame, rows: pd.DataFrame, job: Job) -> pd.DatetimeIndex:
    """The data's own next timestamps when it goes on past the history (exact sessions and
    holidays), else `--calendar`'s next bars, else the history's frequency continued."""
    pred_len = job.pred_len
    after = frame["timestamps"].iloc[len(rows) : len(rows) + pred_len]
    if len(after) == pred_len:
        return pd.DatetimeIndex(after, name="timestamps")
    history = pd.DatetimeIndex(rows["timestamps"])
    return infer_future_stamps(history, pred_len, job.calendar)
