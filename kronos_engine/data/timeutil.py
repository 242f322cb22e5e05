"""Timestamp parsing and time bounds.

The calendar features a model sees are computed from these naive epoch stamps in
``features.time_features`` (integer arithmetic, no pandas per sample), which lets the window
store keep only one int64 stamp per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kronos_engine.errors import DataError

NS_PER_SECOND = 1_000_000_000
_DAY_NS = 86_400 * NS_PER_SECOND


def to_naive_ns(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """datetime-like values as naive wall-clock int64 nanoseconds (time zones keep wall time)."""
    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.as_unit("ns").asi8.copy()


def parse_time(value: str, key: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(
            f"{key}: '{value}' is not a date or datetime; use e.g. '2020-01-31' or "
            f"'2020-01-31 15:00'"
        ) from None
    if stamp is pd.NaT:
        raise DataError(f"{key}: '{value}' is not a date or datetime")
    if stamp.tz is not None:
        stamp = stamp.tz_localize(None)
    return stamp


def _is_date_only(value: str) -> bool:
    text = str(value).strip()
    return ":" not in text and len(text) <= 10


def time_bounds(start: str | None, end: str | None, key: str) -> tuple[int | None, int | None]:
    """``[start, end]`` as ``(lo_ns inclusive, hi_ns exclusive)``.

    A date-only end (``'2022-12-31'``) includes that whole day, so intraday bars on the last
    day are not lost; an end with a time of day is inclusive of exactly that instant.
    """
    lo = hi = None
    if start is not None:
        lo = int(parse_time(start, key).as_unit("ns").value)
    if end is not None:
        stamp = parse_time(end, key)
        hi = int(stamp.as_unit("ns").value) + (_DAY_NS if _is_date_only(end) else 1)
    if lo is not None and hi is not None and hi <= lo:
        raise DataError(f"{key}: end '{end}' is before start '{start}'")
    return lo, hi
