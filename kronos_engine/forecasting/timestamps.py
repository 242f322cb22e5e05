"""Timestamps of a forecast: reading them, and the future stamps of a history: this module picks
the rule (an exchange calendar, `forecasting.calendars`, when one is named; else the history's
regular frequency continued). The calendar features the model sees are
`kronos_engine.data.features.time_features`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.calendars import calendar_stamps


def as_datetime_index(stamps: Any, what: str) -> pd.DatetimeIndex:
    """A Series, Index, list or array of datetimes as a DatetimeIndex (values, not labels)."""
    values = stamps.to_numpy() if isinstance(stamps, (pd.Series, pd.Index)) else stamps
    try:
        index = pd.DatetimeIndex(pd.to_datetime(values))
    except (TypeError, ValueError) as exc:
        raise ForecastError(f"{what}: not datetimes ({' '.join(str(exc).split())})") from None
    if index.hasnans:
        raise ForecastError(f"{what}: contains missing timestamps (NaT)")
    return index


def infer_future_stamps(
    history: pd.DatetimeIndex, pred_len: int, calendar: str | None = None
) -> pd.DatetimeIndex:
    """The `pred_len` stamps after `history`: on `calendar`'s sessions when one is named (an
    `exchange_calendars` name checked by `calendars.check_calendar`, or `24/7`), else at the
    history's regular frequency.

    Intraday weekday bars with session gaps (nights, lunch breaks) continue on the bar times
    of day seen in the history, on business days. Otherwise a pandas-inferable frequency is
    used as is (so weekday-only daily bars continue on business days), or the one step that
    every bar has. Exchange holidays are not known: pass `calendar` or `y_timestamp` to control them.
    """
    if len(history) < 2:
        raise ForecastError("y_timestamp: cannot infer future timestamps from fewer than 2 rows")
    try:
        if calendar is not None:
            return calendar_stamps(history, pred_len, calendar)
        sessions = _session_slots(history)
        if sessions is not None:
            return _continue_sessions(history[-1], sessions, pred_len)
        freq = _frequency(history)
        future = pd.date_range(start=history[-1], periods=pred_len + 1, freq=freq)[1:]
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta):
        raise ForecastError(
            f"pred_len: {pred_len} bars after {history[-1]} run past the last timestamp "
            f"pandas can hold ({_last_stamp(history)}); give a smaller pred_len"
        ) from None
    return pd.DatetimeIndex(future, name="timestamps")


def _last_stamp(history: pd.DatetimeIndex) -> pd.Timestamp:
    """The latest time a `datetime64` of `history`'s unit holds (2262-04-11 in nanoseconds)."""
    return pd.Timestamp(np.datetime64(np.iinfo(np.int64).max, history.unit))


def _session_slots(history: pd.DatetimeIndex) -> list[pd.Timedelta] | None:
    """The bar times of day of intraday weekday bars with session gaps (nights, lunch breaks),
    learnt from at least two days of history; None for data with one regular step."""
    steps = np.diff(history.as_unit("ns").asi8)
    if len(steps) == 0 or (steps <= 0).any() or len(set(steps.tolist())) == 1:
        return None
    days = history.normalize()
    if days.nunique() < 2 or (history.weekday >= 5).any() or (history == days).all():
        return None
    return sorted(set(history - days))


def _continue_sessions(
    last: pd.Timestamp, slots: list[pd.Timedelta], pred_len: int
) -> pd.DatetimeIndex:
    """The next `pred_len` bar times: the day's remaining slots, then whole business days."""
    out: list[pd.Timestamp] = []
    day = last.normalize()
    later = [day + t for t in slots if day + t > last]
    while len(out) < pred_len:
        out.extend(later)
        day = day + pd.offsets.BDay(1)
        later = [day + t for t in slots]
    return pd.DatetimeIndex(out[:pred_len], name="timestamps")


def _frequency(history: pd.DatetimeIndex) -> Any:
    if len(history) >= 3:
        try:
            freq = pd.infer_freq(history)
        except (TypeError, ValueError):
            freq = None
        if freq is not None:
            return freq
    steps = pd.Series(np.diff(history.as_unit("ns").asi8))
    if (steps > 0).all() and steps.nunique() == 1:
        return pd.Timedelta(int(steps.iloc[0]), unit="ns")
    day = pd.Timedelta(days=1).value
    if (steps % day == 0).all() and (history.weekday < 5).all() and (steps > 0).all():
        return "B"  # weekday bars with holidays: continue on business days
    common = pd.to_timedelta(steps.value_counts().index[:3], unit="ns")
    raise ForecastError(
        "y_timestamp: the history has no regular frequency to continue (most common steps: "
        f"{', '.join(str(c) for c in common)}); pass y_timestamp with the future timestamps"
    )
