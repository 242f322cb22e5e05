"""What a model sees of a bar: the feature columns, the per-window normalisation and the
calendar features.

Training windows (`data/windows.py`) and forecasting (`forecasting/predictor.py`) both build
their inputs here, so the two cannot drift apart. The one difference is kept on purpose:
training normalises in float64, forecasting in float32, which is the public predictor's
arithmetic (and its numbers with `top_k=1`); the values agree to float32 precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES: tuple[str, ...] = ("open", "high", "low", "close", "volume", "amount")
PRICE_FEATURES: tuple[str, ...] = FEATURES[:4]
VOLUME, AMOUNT = FEATURES[4], FEATURES[5]
TIME_FEATURES: tuple[str, ...] = ("minute", "hour", "weekday", "day", "month")

NORM_EPS = 1e-5  # the public epsilon added to the std

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def normalise(
    values: np.ndarray, context: int | None = None, clip: float = 5.0, *, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(x, mean, scale)`: `x = clip((values - mean) / scale, +-clip)` as float32.

    `values` is `(..., rows, features)`; `mean` and the population std are taken over the first
    `context` rows (all rows when None) of each window, `scale = std + NORM_EPS`, all computed
    in `dtype` and returned with the rows axis kept (`(..., 1, features)`), so
    `x * scale + mean` undoes the normalisation. No row after `context` influences `x[:context]`.
    `dtype=np.float64`: the training windows; `np.float32`: forecasting (the public numbers).
    """
    x = np.asarray(values, dtype=dtype)
    past = x if context is None else x[..., :context, :]
    mean = past.mean(axis=-2, keepdims=True)
    scale = past.std(axis=-2, keepdims=True) + np.asarray(NORM_EPS, dtype=dtype)
    return np.clip((x - mean) / scale, -clip, clip).astype(np.float32), mean, scale


def time_features(seconds: np.ndarray) -> np.ndarray:
    """`[minute, hour, weekday (Mon=0), day, month]` as float32 for naive epoch seconds.

    Uses the days-from-civil inverse (H. Hinnant's algorithm) so any array shape works.
    """
    s = np.asarray(seconds, dtype=np.int64)
    days = np.floor_divide(s, 86_400)
    sod = s - days * 86_400
    hour = sod // 3600
    minute = (sod % 3600) // 60
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    z = days + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    out = np.stack([minute, hour, weekday, day, month], axis=-1)
    return out.astype(np.float32)


def stamp_seconds(stamps: pd.DatetimeIndex | pd.Series | np.ndarray) -> np.ndarray:
    """Datetime-like values as int64 naive epoch seconds (floored; a time zone keeps its wall
    time), the input of `time_features`; any datetime unit, no nanosecond range limit."""
    index = pd.DatetimeIndex(stamps)
    if index.tz is not None:
        index = index.tz_localize(None)
    return np.floor_divide(index.asi8, _PER_SECOND[index.unit])
