"""Canonical column names, accepted spellings and frequency parsing.

Every source (CSV, Parquet, Qlib, demo, in-memory frames) is turned into one canonical frame:
a ``timestamps`` column plus the six features, so cleaning and windowing have one code path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kronos_engine.errors import DataError

TIMESTAMP = "timestamps"
ROW = "_row"  # 1-based data row in the source file, kept only for error messages

# Accepted spellings (compared case-insensitively, surrounding whitespace ignored).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    TIMESTAMP: ("timestamps", "timestamp", "datetime", "date", "time", "trade_date", "dt"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "amount": ("amount", "amt", "turnover", "money"),
}
SYMBOL_ALIASES: tuple[str, ...] = ("symbol", "instrument", "code", "ticker")
REQUIRED: tuple[str, ...] = (TIMESTAMP, "open", "high", "low", "close", "volume")

_NA_STRINGS = {"", "nan", "na", "n/a", "null", "none"}


@dataclass(frozen=True)
class Freq:
    """A bar frequency: ``day`` or ``N`` minutes."""

    name: str  # canonical qlib spelling: "day" or "<N>min"
    minutes: int | None  # None for daily bars

    @property
    def intraday(self) -> bool:
        return self.minutes is not None


def parse_freq(freq: str) -> Freq:
    """Accept ``day``/``1d``/``daily`` and ``Nmin``/``Nm``/``Nminute``/``Nh``."""
    text = str(freq).strip().lower()
    if text in ("day", "1d", "d", "daily", "1day"):
        return Freq("day", None)
    match = re.fullmatch(r"(\d*)\s*(min|m|minute|minutes|t|h|hour|hours)", text)
    if match:
        count = int(match.group(1) or 1)
        minutes = count * 60 if match.group(2).startswith("h") else count
        if minutes >= 1:
            return Freq(f"{minutes}min", minutes)
    raise DataError(
        f"freq: '{freq}' is not a supported frequency; use 'day' or minutes like '1min', '5min', '60min'"
    )


def find_column(columns: list[str], aliases: tuple[str, ...]) -> str | None:
    """The first column whose normalised name is one of ``aliases`` (alias order wins)."""
    normalised = {str(c).strip().lower(): c for c in reversed(columns)}
    for alias in aliases:
        if alias in normalised:
            return normalised[alias]
    return None


def find_symbol_column(columns: list[str]) -> str | None:
    return find_column(columns, SYMBOL_ALIASES)


def canonical_columns(df: pd.DataFrame, origin: str, symbol: str) -> pd.DataFrame:
    """Rename accepted spellings to canonical names; raise for missing required columns.

    A ``DatetimeIndex`` (or an index named like a timestamp column) is used as ``timestamps``
    when no timestamp column exists, so in-memory frames indexed by time work too.
    """
    if find_column(list(df.columns), COLUMN_ALIASES[TIMESTAMP]) is None:
        index_name = str(df.index.name or "").strip().lower()
        if isinstance(df.index, pd.DatetimeIndex) or index_name in COLUMN_ALIASES[TIMESTAMP]:
            df = df.reset_index(names=TIMESTAMP)
    df = _join_date_and_time(df)
    columns = list(df.columns)
    rename: dict[str, str] = {}
    for name, aliases in COLUMN_ALIASES.items():
        found = find_column(columns, aliases)
        if found is not None:
            rename[found] = name
    missing = [name for name in REQUIRED if name not in rename.values()]
    if missing:
        shown = ", ".join(str(c) for c in columns[:12] if c != ROW)
        allowed = "; ".join(
            f"{k}: {'/'.join(v)}" for k, v in COLUMN_ALIASES.items() if k in missing
        )
        raise DataError(
            f"{origin}: symbol {symbol}: missing column(s) {', '.join(missing)} "
            f"(found: {shown}); accepted spellings, any case: {allowed}"
        )
    out = pd.DataFrame({name: df[src].to_numpy() for src, name in rename.items()})
    if ROW in df.columns:
        out[ROW] = df[ROW].to_numpy()
    else:
        out[ROW] = np.arange(1, len(df) + 1, dtype=np.int64)
    return out


def _join_date_and_time(df: pd.DataFrame) -> pd.DataFrame:
    """Separate ``date`` and ``time`` columns (and no full timestamp column) are one timestamp:
    ``"<date> <time>"``; otherwise the time of day would be dropped without a word."""
    columns = list(df.columns)
    full = find_column(columns, ("timestamps", "timestamp", "datetime", "dt"))
    date = find_column(columns, ("date", "trade_date"))
    time = find_column(columns, ("time",))
    if full is not None or date is None or time is None:
        return df
    joined = df[date].astype(str).str.strip() + " " + df[time].astype(str).str.strip()
    blank = df[date].isna() | df[time].isna()
    out = df.drop(columns=[date, time])
    out.insert(0, TIMESTAMP, joined.where(~blank, None))
    return out


def is_na_string(values: pd.Series) -> np.ndarray:
    """True where an object cell is a missing-value marker rather than garbage."""
    text = values.astype(str).str.strip().str.lower()
    return values.isna().to_numpy() | text.isin(_NA_STRINGS).to_numpy()
