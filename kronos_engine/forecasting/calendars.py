"""Future bar stamps on an exchange's calendar (`--calendar`, `KronosPredictor(calendar=)`).

Without a calendar the future continues the history's bar times on business days
(`timestamps.infer_future_stamps`), which stamps forecast rows on exchange holidays. With one,
the sessions, lunch breaks, early closes and holidays come from `exchange_calendars` (the
optional `calendars` extra, imported only when a calendar is asked for):

* daily bars (no two bars on one day) continue on the calendar's next sessions, at the
  history's last time of day (a bar stamped 15:00 stays at 15:00);
* intraday bars continue at the history's bar length within each session part (open to the
  lunch break, the break's end to the close). Bars stamped at their close (09:35 for the first
  5-minute A-share bar, the close itself for the last) or at their open (09:30, ..., 14:55)
  is read from the history: the convention that puts more of its bars inside the sessions
  wins, a tie is read as close-stamped (the A-share habit). A part that the bar length does not
  divide ends in one shorter bar, stamped at the close (or at its open);
* `24/7` (crypto) continues at the history's bar length with no gap at all; it needs no extra.

Naive stamps are read as the exchange's wall-clock times (the data's timestamps are naive wall
times); tz-aware ones are compared in their own zone and the future keeps that zone. A history
whose last bar is not on the calendar (a closed day, outside the session times, or past the
years the library records holidays for) is refused in one line: the calendar is then most
likely the wrong one, and stamps guessed from it would be wrong too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.data.frequency import most_common_gap
from kronos_engine.errors import ConfigError, ForecastError
from kronos_engine.extras import require

CONTINUOUS = "24/7"
LIBRARY = "exchange_calendars"
NAMES_HINT = (
    f"use {CONTINUOUS} or a name of {LIBRARY} such as XSHG, XHKG, XNYS (all: python -c "
    f'"import {LIBRARY}; print({LIBRARY}.get_calendar_names())")'
)


def check_calendar(name: str | None, flag: str) -> str | None:
    """`name` stripped, after checking it before any work: the library is installed and knows
    it (`24/7` needs nothing). A bad name is one line naming `flag` and where the names are."""
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ForecastError(f"{flag}: {name!r} is not a calendar name; {NAMES_HINT}")
    name = name.strip()
    if name == CONTINUOUS:
        return name
    library = _library(name, flag)
    if name not in library.get_calendar_names():
        raise ForecastError(f"{flag}: unknown calendar '{name}'; {NAMES_HINT}")
    return name


def calendar_stamps(history: pd.DatetimeIndex, pred_len: int, name: str) -> pd.DatetimeIndex:
    """The `pred_len` stamps after `history` on calendar `name` (checked by `check_calendar`)."""
    if name == CONTINUOUS:
        return pd.DatetimeIndex(_continuous(history, pred_len), name="timestamps")
    bar = bar_length(history)
    wall = history.tz_localize(None) if history.tz is not None else history
    first_year, last_year = wall[0].year, wall[-1].year
    years = 1
    while True:  # a longer forecast needs more years of the calendar
        cal, complete = _calendar(name, first_year - 1, last_year + years)
        if bar is None:
            future = _next_sessions(cal, name, history, wall, pred_len)
        else:
            future = _next_bars(cal, name, history, bar, pred_len)
        if len(future) == pred_len:
            return pd.DatetimeIndex(future, name="timestamps")
        if not complete:
            raise ForecastError(
                f"calendar {name}: {pred_len} bars after {history[-1]} run past "
                f"{cal.last_session.date()}, the last session {LIBRARY} records for {name}; "
                "give a smaller pred_len or pass y_timestamp"
            )
        years *= 2


def bar_length(history: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The most common spacing of two bars of one day (nights and lunch breaks are rarer), or
    None for daily bars: the rule of `freq: auto` (`data.frequency`)."""
    wall = history.tz_localize(None) if history.tz is not None else history
    gap = most_common_gap(wall.as_unit("ns").asi8)
    return None if gap is None else pd.Timedelta(gap, unit="ns")


def _library(name: str, flag: str) -> Any:
    """`exchange_calendars`, or one line naming `flag` and the extra that installs it."""
    try:
        return require(LIBRARY, flag, name)
    except ConfigError as exc:
        raise ForecastError(str(exc)) from None


@lru_cache(maxsize=16)
def _calendar(name: str, first_year: int, last_year: int) -> tuple[Any, bool]:
    """The calendar over whole years (one per symbol range, cached: building one takes a
    while), clipped to the years the library records holidays for; True when not clipped."""
    library = _library(name, "calendar")
    factory = library.get_calendar(name)
    low, high = factory.bound_min(), factory.bound_max()
    start = pd.Timestamp(f"{first_year}-01-01")
    end = pd.Timestamp(f"{last_year}-12-31")
    complete = high is None or end <= high
    start = start if low is None else max(start, low)
    end = end if high is None else min(end, high)
    return library.get_calendar(name, start=start, end=end), complete


def _continuous(history: pd.DatetimeIndex, pred_len: int) -> pd.DatetimeIndex:
    """24/7: the most common step of the history (a day for daily bars), without gaps."""
    steps = np.diff(history.as_unit("ns").asi8)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise ForecastError("calendar 24/7: the history has no step between two bars to continue")
    values, counts = np.unique(steps, return_counts=True)
    step = pd.Timedelta(int(values[np.argmax(counts)]), unit="ns")
    return pd.DatetimeIndex([history[-1] + step * k for k in range(1, pred_len + 1)])


def _next_sessions(
    cal: Any, name: str, history: pd.DatetimeIndex, wall: pd.DatetimeIndex, pred_len: int
) -> pd.DatetimeIndex:
    """Daily bars: the sessions after the last bar's, at its time of day. Bars that skip
    sessions (weekly, monthly) are refused: their next bar is not the next session."""
    sessions = cal.sessions
    days = wall.normalize()
    at = sessions.get_indexer(days)
    if at[-1] < 0:
        raise ForecastError(
            f"calendar {name}: the last bar {history[-1]} is not on a {name} session (a closed "
            f"day); check the calendar, or pass y_timestamp"
        )
    known = at[at >= 0]
    if len(known) >= 3 and np.median(np.diff(known)) > 1:
        raise ForecastError(
            f"calendar {name}: the history's daily bars are {int(np.median(np.diff(known)))} "
            "sessions apart; a calendar continues one bar per session (or intraday bars)"
        )
    future = sessions[at[-1] + 1 : at[-1] + 1 + pred_len] + (wall[-1] - days[-1])
    return future.tz_localize(history.tz) if history.tz is not None else future


def _next_bars(
    cal: Any, name: str, history: pd.DatetimeIndex, bar: pd.Timedelta, pred_len: int
) -> list[pd.Timestamp]:
    """Intraday bars: the bar stamps of each session part after the last bar."""
    starts, ends = _session_parts(cal, history.tz)
    at_close = _stamped_at_close(history, starts, ends)
    last = history[-1]
    part = _part_of(last, starts, ends, at_close)
    if part < 0:
        hours = "09:35 ... 15:00" if at_close else "09:30 ... 14:55"
        raise ForecastError(
            f"calendar {name}: the last bar {last} is not within a {name} session (bars read as "
            f"stamped at their {'close' if at_close else 'open'}, like {hours} for XSHG "
            "5-minute bars); check the calendar, or pass y_timestamp"
        )
    out: list[pd.Timestamp] = []
    for start, end in zip(starts[part:], ends[part:]):
        out.extend(t for t in _part_bars(start, end, bar, at_close) if t > last)
        if len(out) >= pred_len:
            break
    return out[:pred_len]


def _session_parts(cal: Any, tz: Any) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """The start and end of every trading part (a session, or its two halves around a break)
    in the history's zone: the exchange's wall clock for naive stamps."""
    frame = pd.DataFrame(
        {"open": cal.opens, "close": cal.closes, "bs": cal.break_starts, "be": cal.break_ends}
    )
    broken = frame["bs"].notna() & frame["be"].notna()
    starts = pd.concat([frame["open"], frame.loc[broken, "be"]]).sort_values()
    ends = pd.concat([frame["close"].where(~broken, frame["bs"]), frame.loc[broken, "close"]])
    ends = ends.sort_values()

    def local(stamps: pd.Series) -> pd.DatetimeIndex:
        index = pd.DatetimeIndex(stamps)
        return (
            index.tz_convert(tz) if tz is not None else index.tz_convert(cal.tz).tz_localize(None)
        )

    return local(starts), local(ends)


def _stamped_at_close(
    history: pd.DatetimeIndex, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex
) -> bool:
    """True when more bars fall within (start, end] than within [start, end): bars stamped at
    their close (a tie too: the A-share habit)."""
    close = (_parts_of(history, starts, ends, at_close=True) >= 0).sum()
    opened = (_parts_of(history, starts, ends, at_close=False) >= 0).sum()
    return bool(close >= opened)


def _parts_of(
    stamps: pd.DatetimeIndex, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex, at_close: bool
) -> np.ndarray:
    """The trading part each stamp lies in (-1: none), `(start, end]` for close-stamped bars,
    `[start, end)` for open-stamped ones."""
    side = "left" if at_close else "right"
    part = starts.searchsorted(stamps, side=side) - 1
    inside = part >= 0
    end = ends[np.maximum(part, 0)]
    inside &= (stamps <= end) if at_close else (stamps < end)
    return np.where(inside, part, -1)


def _part_of(
    stamp: pd.Timestamp, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex, at_close: bool
) -> int:
    return int(_parts_of(pd.DatetimeIndex([stamp]), starts, ends, at_close)[0])


def _part_bars(
    start: pd.Timestamp, end: pd.Timestamp, bar: pd.Timedelta, at_close: bool
) -> list[pd.Timestamp]:
    """The bar stamps of one trading part; a last shorter bar ends at `end`."""
    count = -(-(end - start) // bar)  # ceil: a part the bar does not divide ends shorter
    if at_close:
        return [min(start + bar * k, end) for k in range(1, count + 1)]
    return [start + bar * k for k in range(count)]
