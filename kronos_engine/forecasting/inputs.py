"""Reading the public API's inputs: a history DataFrame's six model columns (filled as the public
code does), its timestamps, per-series lists and `pred_len` (the quantiles and the sampling
follow `forecasting.options`). Every problem is a `ForecastError` naming the series and column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.data.bars import amount_unavailable, first_bar_problem
from kronos_engine.data.features import AMOUNT, PRICE_FEATURES, VOLUME
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.forecast import COLUMNS
from kronos_engine.forecasting.options import check_pred_len
from kronos_engine.forecasting.timestamps import as_datetime_index

PRICE_COLUMNS = list(PRICE_FEATURES)
VOLUME_COLUMN, AMOUNT_COLUMN = VOLUME, AMOUNT


def ohlcv_values(df: pd.DataFrame, where: str = "df") -> np.ndarray:
    """The six model columns as float32, filled as the public code does: no volume means
    volume and amount 0; no amount (also an all-zero or empty one, as training reads it) means
    volume x mean price. The bars must be valid by the
    rules training data follows (`data/bars.py`): finite, within float32, prices > 0,
    volume/amount >= 0, high/low bounding open/close."""
    if not isinstance(df, pd.DataFrame):
        raise ForecastError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise ForecastError(f"{where}: price column(s) {missing} not found; need {PRICE_COLUMNS}")
    if len(df) < 1:
        raise ForecastError(f"{where}: no rows to forecast from")
    df = df.copy()
    if VOLUME_COLUMN not in df.columns:
        df[VOLUME_COLUMN] = 0.0
        df[AMOUNT_COLUMN] = 0.0
    if AMOUNT_COLUMN not in df.columns or _no_amount(df[AMOUNT_COLUMN]):
        df[AMOUNT_COLUMN] = df[VOLUME_COLUMN] * df[PRICE_COLUMNS].mean(axis=1)
    try:
        values = df[COLUMNS].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = [c for c in COLUMNS if not pd.api.types.is_numeric_dtype(df[c])]
        raise ForecastError(
            f"{where}: column(s) {bad} hold values that are not numbers; allowed: numbers"
        ) from None
    problem = first_bar_problem(values)
    if problem is not None:
        raise ForecastError(
            f"{where}: row {problem.row} (index {df.index[problem.row]!r}): {problem.text} "
            f"(the rules training data follows)"
        )
    return values.astype(np.float32)


def _no_amount(column: pd.Series) -> bool:
    """`bars.amount_unavailable` for a DataFrame column (the rule training data follows)."""
    try:
        values = column.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        return False  # not numbers: refused with the other columns
    return amount_unavailable(values)


def history_stamps(df: pd.DataFrame, x_timestamp: Any, where: str) -> pd.DatetimeIndex:
    if x_timestamp is not None:
        return as_datetime_index(x_timestamp, f"{where} x_timestamp")
    if isinstance(df.index, pd.DatetimeIndex):
        return pd.DatetimeIndex(df.index)
    if "timestamps" in df.columns:
        return as_datetime_index(df["timestamps"], f"{where} timestamps")
    raise ForecastError(
        f"{where}: no x_timestamp given and neither a DatetimeIndex nor a 'timestamps' column"
    )


def per_series(values: Sequence[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise ForecastError(f"{name} must be a list with one entry per DataFrame ({n})")
    return list(values)


def resolve_pred_len(pred_len: int | None, y_stamps: Sequence[Any]) -> int:
    if pred_len is None:
        given = [len(y) for y in y_stamps if y is not None]
        if not given:
            raise ForecastError("pred_len: required when y_timestamp is not given")
        pred_len = given[0]
    return check_pred_len(pred_len)
