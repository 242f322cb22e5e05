"""Reading one symbol's raw cells: timestamps (dates, datetimes, YYYYMMDD or epoch numbers, one
day/month order and UTC-offset rule per column) and feature numbers, never guessed at, each
error naming the row through a `RowLocator`. `cleaning.clean_frame` and the Qlib writer use it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kronos_engine.data.schema import is_na_string
from kronos_engine.data.timeutil import to_naive_ns
from kronos_engine.errors import DataError


class RowLocator:
    """Formats 'file: symbol S, row R (timestamp)' for the current row order."""

    def __init__(self, origin: str, symbol: str, rows: np.ndarray, ns: np.ndarray, file_rows: bool):
        self.origin, self.symbol, self.rows, self.ns, self.file_rows = (
            origin,
            symbol,
            rows,
            ns,
            file_rows,
        )

    def __call__(self, i: int) -> str:
        stamp = pd.Timestamp(int(self.ns[i])) if self.ns is not None else None
        if self.file_rows:
            when = f" ({stamp})" if stamp is not None else ""
            return f"{self.origin}: symbol {self.symbol}, row {int(self.rows[i])}{when}"
        return f"{self.origin}: symbol {self.symbol}, at {stamp}"


def parse_timestamps(col: pd.Series, where: RowLocator) -> np.ndarray:
    """Timestamps as naive int64 ns; numbers are read as YYYYMMDD or epoch s/ms/us/ns."""
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{where(0)}: timestamps column holds booleans; use dates or datetimes")
    if pd.api.types.is_numeric_dtype(col):
        numbers = col.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.flatnonzero(~np.isfinite(numbers))
        if missing.size:
            raise DataError(f"{where(missing[0])}: missing timestamp; every row needs one")
        if np.all(numbers == np.round(numbers)) and np.all(
            (numbers >= 1900_01_01) & (numbers <= 2100_12_31)
        ):
            text = pd.Series(numbers.astype(np.int64).astype(str))
            parsed = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
        else:
            top = np.abs(numbers).max() if numbers.size else 0
            unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
            parsed = pd.to_datetime(pd.Series(numbers), unit=unit, errors="coerce")
    elif isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.Series(col)
    else:
        parsed = _parse_text_stamps(col, where)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        if is_na_string(col.iloc[[i]])[0]:
            raise DataError(f"{where(i)}: missing timestamp; every row needs one")
        raise DataError(
            f"{where(i)}: timestamp {col.iloc[i]!r} is not a date or datetime; "
            f"allowed: ISO dates/datetimes, YYYYMMDD or epoch numbers"
        )
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    return to_naive_ns(parsed)


_SLASH_DATE = re.compile(r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(.*)$")
_OFFSET = re.compile(r"^(.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(Z|[+-]\d{2}:?\d{2})\s*$")
_MAX_DST_SHIFT_MIN = 60


def _day_month_order(text: pd.Series, where: RowLocator) -> pd.Series:
    """`dd/mm/yyyy` vs `mm/dd/yyyy`: decided for the whole column, never per cell. A field
    above 12 settles it; when none is, the order that keeps the rows sorted in time wins, and
    if both (or neither) do, the column is ambiguous and refused. Returns ISO text."""
    parts = text.str.extract(_SLASH_DATE)
    first, second = parts[0].astype(int), parts[2].astype(int)
    day_first_ok = bool((second <= 12).all() and (first <= 31).all())
    month_first_ok = bool((first <= 12).all() and (second <= 31).all())

    def iso(day: pd.Series, month: pd.Series) -> pd.Series:
        return (
            parts[3] + "-" + month.astype(str).str.zfill(2) + "-" + day.astype(str).str.zfill(2)
        ) + parts[4]

    if day_first_ok and month_first_ok:
        orders = {}
        for name, (day, month) in {
            "day-first": (first, second),
            "month-first": (second, first),
        }.items():
            stamps = pd.to_datetime(iso(day, month), errors="coerce", format="mixed")
            orders[name] = bool(stamps.notna().all() and stamps.is_monotonic_increasing)
        if orders["day-first"] == orders["month-first"]:
            raise DataError(
                f"{where(0)}: dates like {text.iloc[0]!r} can be read day-first or month-first "
                f"and both orders fit; allowed: ISO dates (YYYY-MM-DD) or a column with a day "
                f"above 12 that settles the order"
            )
        day_first_ok = orders["day-first"]
    elif not (day_first_ok or month_first_ok):
        day_first = np.flatnonzero((first > 12).to_numpy())
        month_first = np.flatnonzero((second > 12).to_numpy())
        if day_first.size and month_first.size:
            i, j = int(day_first[0]), int(month_first[0])
            raise DataError(
                f"{where(max(i, j))}: date {text.iloc[max(i, j)]!r} and {text.iloc[min(i, j)]!r} "
                f"(data row {int(where.rows[min(i, j)])}) need different day/month orders; "
                f"allowed: one order per column (ISO dates, YYYY-MM-DD, are never ambiguous)"
            )
        i = int(np.flatnonzero(((first > 31) | (second > 31)).to_numpy())[0])
        raise DataError(f"{where(i)}: timestamp {text.iloc[i]!r} is not a date")
    return iso(first, second) if day_first_ok else iso(second, first)


def _utc_offsets(text: pd.Series, where: RowLocator) -> pd.Series:
    """Mixed UTC offsets (a daylight-saving switch) keep each row's wall-clock time, like a
    single offset does; offsets further apart than a DST shift, or rows with and without an
    offset, are refused. Returns the text to parse (offsets stripped when they were mixed)."""
    parts = text.str.extract(_OFFSET)
    has = parts[1].notna()
    if not has.any():
        return text
    offsets = parts[1].fillna("")
    if offsets[has].nunique() <= 1 and has.all():
        return text  # one offset: pandas keeps it, the wall-clock time is used
    if not has.all():
        i = int(np.flatnonzero(~has.to_numpy())[0])
        j = int(np.flatnonzero(has.to_numpy())[0])
        raise DataError(
            f"{where(i)}: timestamp {text.iloc[i]!r} has no UTC offset but row "
            f"{int(where.rows[j])} has {offsets.iloc[j]}; allowed: an offset on every row or on "
            f"none"
        )

    def minutes(value: str) -> int:
        if value == "Z":
            return 0
        digits = value[1:].replace(":", "")
        sign = -1 if value[0] == "-" else 1
        return sign * (int(digits[:2]) * 60 + int(digits[2:]))

    mins = offsets.map(minutes).to_numpy()
    if int(mins.max() - mins.min()) > _MAX_DST_SHIFT_MIN:
        i = int(np.flatnonzero(mins != mins[0])[0])
        raise DataError(
            f"{where(i)}: timestamp {text.iloc[i]!r} has UTC offset {offsets.iloc[i]}, row "
            f"{int(where.rows[0])} has {offsets.iloc[0]}; allowed: one UTC offset per symbol, "
            f"or a daylight-saving switch of at most 1 hour (local wall-clock time is kept)"
        )
    return parts[0]


def _parse_text_stamps(col: pd.Series, where: RowLocator) -> pd.Series:
    text = col.astype(str).str.strip()
    missing = is_na_string(col)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where(i)}: missing timestamp; every row needs one")
    if len(text) and bool(text.str.match(_SLASH_DATE).all()):
        text = _day_month_order(text, where)
    text = _utc_offsets(text, where)
    try:
        return pd.to_datetime(text)
    except (ValueError, TypeError, OverflowError):
        try:
            return pd.to_datetime(text, format="mixed", errors="coerce")
        except (ValueError, TypeError, OverflowError):
            return pd.to_datetime(text, format="mixed", errors="coerce", utc=True)


def parse_numbers(col: pd.Series, name: str, where: RowLocator) -> np.ndarray:
    """A feature column as float64; non-numeric text is never guessed at."""
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{where(0)}: column {name} holds booleans; only numbers are allowed")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy() & ~is_na_string(col))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where(i)}: column {name} has non-numeric value {col.iloc[i]!r} "
            f"({bad.size} such cell(s)); allowed: numbers, or an empty cell for missing"
        )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
