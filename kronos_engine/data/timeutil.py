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


def bar_ticks(stamps: object, max_labels: int = 10) -> tuple[list[int], list[str], list[int]]:
    """Ticks for a bar-index axis (bar `i` drawn at `x = i`), so nights, weekends and lunch
    breaks take no width: intraday bars are labelled with the date at each day's first bar,
    daily bars at each month's first bar (each week's over less than 3 months, each year's
    over 4 or more years); labels are thinned to at most `max_labels`. Returns the labelled
    positions, their labels, and the unlabelled session starts (a lunch break, days thinned
    out) for minor ticks."""
    t = pd.DatetimeIndex(stamps)
    if len(t) == 0:
        return [], [], []
    ns = t.as_unit("ns").asi8
    step = float(np.median(np.diff(ns))) if len(t) > 1 else float(_DAY_NS)

    def firsts(keys: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])

    if step < _DAY_NS:
        starts, fmt = firsts(t.normalize().asi8), "%m-%d"
        sessions = np.flatnonzero(np.r_[True, np.diff(ns) > 1.5 * step])
    else:
        months, years = firsts(t.to_period("M").asi8), firsts(t.to_period("Y").asi8)
        if len(months) < 3:  # a few weeks of bars: each week's first bar
            starts, fmt = firsts((ns // _DAY_NS + 3) // 7), "%m-%d"
        elif len(months) <= max_labels or len(years) < 4:  # thinned to every k-th month
            starts, fmt = months, "%Y-%m"
        else:
            starts, fmt = years, "%Y"
        sessions = starts
    every = -(-len(starts) // max_labels)
    labelled = starts[::every]
    labels, year = [], None
    for i in labelled:
        text = t[i].strftime(fmt)
        if fmt == "%m-%d" and t[i].year != year:
            text = t[i].strftime("%Y-%m-%d")
        labels.append(text)
        year = t[i].year
    minor = sorted((set(sessions.tolist()) | set(starts.tolist())) - set(labelled.tolist()))
    return labelled.tolist(), labels, minor
