"""Validation and repair of one symbol's raw K-lines.

Policies (``bad_data``):

* Never repairable, always a ``DataError``: missing required columns, non-numeric cells,
  missing or unparseable timestamps, duplicate timestamps whose values differ.
* ``error`` (default): every other problem below raises a ``DataError`` naming the file,
  symbol, first bad row (1-based data row and timestamp) and the total count.
* ``repair`` fixes them, counts every fix (logged and put in the build summary):

  - unsorted timestamps: stable sort by time (``unsorted_symbols_sorted``);
  - exact-duplicate rows (same timestamp, same values): keep the first
    (``duplicate_rows_dropped``);
  - NaN/inf cells in open..volume: forward-filled from the previous row
    (``nan_inf_cells_filled``);
  - prices <= 0, negative volume: treated as missing, forward-filled
    (``nonpositive_cells_filled``);
  - rows before the first complete row (nothing to forward-fill from): dropped
    (``leading_rows_dropped``);
  - missing/invalid amount cells: ``mean(open, high, low, close) * volume``
    (``amount_cells_derived``);
  - high/low not bounding open/close (high < low included): ``high = max(o, h, l, c)``,
    ``low = min(o, h, l, c)`` (``high_low_fixed``).

An absent (or entirely empty) ``amount`` column is the documented convention, not a repair:
it is derived for the whole symbol and reported as ``amount_derived``.
Qlib calendar slots where a symbol did not trade (all of open..volume NaN) are dropped and
counted as ``untraded_rows_dropped`` under both policies.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kronos_engine.data.schema import FEATURES, ROW, TIMESTAMP, Freq, is_na_string
from kronos_engine.data.timeutil import to_naive_ns
from kronos_engine.data.windows import NORM_EPS
from kronos_engine.errors import DataError

REPAIR_KINDS: tuple[str, ...] = (
    "unsorted_symbols_sorted",
    "duplicate_rows_dropped",
    "nan_inf_cells_filled",
    "nonpositive_cells_filled",
    "leading_rows_dropped",
    "amount_cells_derived",
    "high_low_fixed",
)
_OHLC_RTOL = 1e-6  # float32 sources round prices; below this a high/low mismatch is noise
_F32_MAX = float(np.finfo(np.float32).max)  # windows are stored as float32
_ALLOWED_VALUES = (
    "allowed: finite numbers of magnitude below 3.4e38 (stored as float32), prices > 0, "
    "volume and amount >= 0"
)


@dataclass
class CleanReport:
    """What cleaning did to one symbol, for the build summary."""

    repairs: Counter = field(default_factory=Counter)
    amount_derived: bool = False
    untraded_rows_dropped: int = 0


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


_DAY_NS = 86_400 * 1_000_000_000
_MINUTE_NS = 60 * 1_000_000_000


def check_frequency(ns: np.ndarray, freq: Freq, where: RowLocator) -> None:
    """Bars of one symbol must all be of the configured ``freq``: never two bars on one day
    with ``freq: day``; never two bars of one day closer than ``freq``, nor a run of daily bars
    (one bar at midnight on its day) among intraday bars."""
    if len(ns) < 2:
        return
    days = ns // _DAY_NS
    same_day = np.flatnonzero(days[1:] == days[:-1]) + 1
    if not freq.intraday:
        if same_day.size:
            i = int(same_day[0])
            raise DataError(
                f"{where(i)}: second bar on {pd.Timestamp(int(ns[i])).date()} "
                f"({same_day.size} such row(s)) but freq is day; allowed: one bar per day "
                f"with freq: day, or set freq to the bar length (e.g. 5min)"
            )
        return
    step = freq.minutes * _MINUTE_NS
    close = same_day[(ns[same_day] - ns[same_day - 1]) < step]
    if close.size:
        i = int(close[0])
        gap = (ns[i] - ns[i - 1]) / _MINUTE_NS
        raise DataError(
            f"{where(i)}: bar {gap:g} min after the previous one ({close.size} such row(s)) but "
            f"freq is {freq.name}; allowed: bars at least {freq.minutes} min apart, or set freq "
            f"to the bar length"
        )
    _, first, counts = np.unique(days, return_index=True, return_counts=True)
    lone = first[(counts == 1) & (ns[first] % _DAY_NS == 0)]
    if lone.size >= 2:
        i = int(lone[0])
        raise DataError(
            f"{where(i)}: a daily bar (the only bar of its day, at midnight; {lone.size} such "
            f"day(s)) among {freq.name} bars; allowed: bars of one frequency per symbol (put "
            f"daily and intraday bars in separate runs)"
        )


def check_scale(values: np.ndarray, where: RowLocator) -> None:
    """Windows are normalised with ``(x - mean) / (std + 1e-5)`` (the public epsilon, kept for
    normal data): prices that vary by far less than 1e-5 would normalise to constant zeros and
    the model would train on nothing, so they are refused with the scale to use."""
    if len(values) < 2:
        return
    spread = float(np.max(np.std(values[:, :4], axis=0)))
    if spread < NORM_EPS:
        level = float(np.median(np.abs(values[:, 3])))
        raise DataError(
            f"{where(0)}: prices vary by only {spread:.3g} (std of open..close over "
            f"{len(values)} rows, level {level:.3g}), below the normalisation epsilon "
            f"{NORM_EPS:g}, so every window would normalise to ~0; allowed: price std >= "
            f"{NORM_EPS:g}; rescale the prices (e.g. quote them per 1e6 units)"
        )


def _hint(policy_fix: str) -> str:
    return f"fix the input or set bad_data: repair ({policy_fix})"


def clean_frame(
    df: pd.DataFrame,
    *,
    origin: str,
    symbol: str,
    policy: str,
    bounds: tuple[int | None, int | None] = (None, None),
    file_rows: bool = True,
    drop_untraded: bool = False,
    freq: Freq | None = None,
) -> tuple[pd.DataFrame, CleanReport]:
    """Validate (and with ``policy='repair'`` fix) a frame from ``canonical_columns``.

    Returns a frame with ``timestamps`` (datetime64[ns], sorted, unique) and the six features
    as float64, restricted to ``bounds`` (``(lo_ns inclusive, hi_ns exclusive)``).
    """
    if policy not in ("error", "repair"):
        raise DataError(f"bad_data: '{policy}' is not allowed; choose one of ['error', 'repair']")
    repair = policy == "repair"
    report = CleanReport()
    rows = df[ROW].to_numpy(dtype=np.int64)
    where = RowLocator(origin, symbol, rows, None, file_rows)
    ns = parse_timestamps(df[TIMESTAMP], where)
    where.ns = ns
    names = [n for n in FEATURES if n in df.columns]
    values = np.full((len(df), len(FEATURES)), np.nan)
    for name in names:
        values[:, FEATURES.index(name)] = parse_numbers(df[name], name, where)
    amount_absent = "amount" not in names or bool(np.all(np.isnan(values[:, 5])))

    lo, hi = bounds
    keep = np.ones(len(ns), dtype=bool)
    if lo is not None:
        keep &= ns >= lo
    if hi is not None:
        keep &= ns < hi
    if not keep.all():
        ns, values, rows = ns[keep], values[keep], rows[keep]
        where.ns, where.rows = ns, rows

    if drop_untraded and len(ns):
        untraded = np.all(np.isnan(values[:, :5]), axis=1)
        if untraded.any():
            report.untraded_rows_dropped = int(untraded.sum())
            ns, values, rows = ns[~untraded], values[~untraded], rows[~untraded]
            where.ns, where.rows = ns, rows

    # --- order ---
    backwards = np.flatnonzero(np.diff(ns) < 0)
    if backwards.size:
        i = int(backwards[0]) + 1
        if not repair:
            raise DataError(
                f"{where(i)}: timestamp is earlier than the previous row's "
                f"{pd.Timestamp(int(ns[i - 1]))} ({backwards.size} such row(s)); rows must be "
                f"sorted by time; {_hint('sorts by time')}"
            )
        order = np.argsort(ns, kind="stable")
        ns, values, rows = ns[order], values[order], rows[order]
        where.ns, where.rows = ns, rows
        report.repairs["unsorted_symbols_sorted"] += 1

    # --- duplicates ---
    if len(ns) > 1:
        repeated = np.concatenate([[False], ns[1:] == ns[:-1]])
        if repeated.any():
            first = np.maximum.accumulate(np.where(~repeated, np.arange(len(ns)), 0))
            ref = values[first]
            same = np.all((values == ref) | (np.isnan(values) & np.isnan(ref)), axis=1)
            conflicting = np.flatnonzero(repeated & ~same)
            if conflicting.size:
                i = int(conflicting[0])
                raise DataError(
                    f"{where(i)}: timestamp also used by row {int(rows[first[i]])} with "
                    f"different values ({conflicting.size} such row(s)); allowed: one row per "
                    f"timestamp (exact duplicates are dropped with bad_data: repair)"
                )
            dups = np.flatnonzero(repeated)
            if not repair:
                i = int(dups[0])
                raise DataError(
                    f"{where(i)}: duplicates row {int(rows[first[i]])} (same timestamp and "
                    f"values; {dups.size} such row(s)); {_hint('keeps the first')}"
                )
            ns, values, rows = ns[~repeated], values[~repeated], rows[~repeated]
            where.ns, where.rows = ns, rows
            report.repairs["duplicate_rows_dropped"] += int(dups.size)

    # --- values ---
    if amount_absent:
        values[:, 5] = 0.0  # placeholder, derived below
        report.amount_derived = True
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(values) | (np.abs(values) > _F32_MAX)
    nonpositive = np.zeros_like(nonfinite)
    with np.errstate(invalid="ignore"):
        nonpositive[:, :4] = values[:, :4] <= 0
        nonpositive[:, 4:] = values[:, 4:] < 0
    invalid = nonfinite | nonpositive
    if invalid.any():
        bad_rows = np.flatnonzero(invalid.any(axis=1))
        i = int(bad_rows[0])
        j = int(np.flatnonzero(invalid[i])[0])
        if not repair:
            raise DataError(
                f"{where(i)}: column {FEATURES[j]} is {float(values[i, j])!r} "
                f"({int(invalid.sum())} bad cell(s) in {bad_rows.size} row(s)); "
                f"{_ALLOWED_VALUES}; {_hint('forward-fills them')}"
            )
        core = values[:, :5].copy()
        core[invalid[:, :5]] = np.nan
        filled = pd.DataFrame(core).ffill().to_numpy()
        complete = np.flatnonzero(~np.isnan(filled).any(axis=1))
        start = int(complete[0]) if complete.size else len(filled)
        counts = {
            "nan_inf_cells_filled": int(nonfinite[start:, :5].sum()),
            "nonpositive_cells_filled": int(
                (nonpositive[start:, :5] & ~nonfinite[start:, :5]).sum()
            ),
            "amount_cells_derived": int(invalid[start:, 5].sum()),
            "leading_rows_dropped": start,
        }
        report.repairs.update({k: v for k, v in counts.items() if v})
        values[:, :5] = filled
        amount_bad = invalid[:, 5]
        values[amount_bad, 5] = values[amount_bad, :4].mean(axis=1) * values[amount_bad, 4]
        ns, values, rows = ns[start:], values[start:], rows[start:]
        where.ns, where.rows = ns, rows
    if amount_absent:
        values[:, 5] = values[:, :4].mean(axis=1) * values[:, 4]
    with np.errstate(invalid="ignore", over="ignore"):
        overflow = np.flatnonzero(~(np.abs(values[:, 5]) <= _F32_MAX))
    if overflow.size:  # derived price * volume beyond float32 (never repairable)
        i = int(overflow[0])
        raise DataError(
            f"{where(i)}: amount = mean(open, high, low, close) * volume = "
            f"{float(values[i, 5]):.3g} overflows float32 ({overflow.size} row(s)); "
            f"{_ALLOWED_VALUES}; rescale the prices or the volume"
        )

    # --- high / low must bound open / close ---
    o, h, low, c = (values[:, k] for k in range(4))
    top = np.maximum(o, c)
    bottom = np.minimum(o, c)
    tol = _OHLC_RTOL * np.maximum(np.abs(top), np.abs(h))
    broken = (h < low) | (h < top - tol) | (low > bottom + tol)
    if broken.any() and not repair:
        i = int(np.flatnonzero(broken)[0])
        raise DataError(
            f"{where(i)}: open {o[i]:g} high {h[i]:g} low {low[i]:g} close {c[i]:g} "
            f"({int(broken.sum())} such row(s)); allowed: low <= min(open, close) and "
            f"max(open, close) <= high; {_hint('sets high/low to the max/min of the four')}"
        )
    if repair:
        new_high = np.maximum(h, np.maximum(top, low))
        new_low = np.minimum(low, np.minimum(bottom, h))
        changed = (new_high != h) | (new_low != low)
        if changed.any():
            report.repairs["high_low_fixed"] += int(changed.sum())
            values[:, 1], values[:, 2] = new_high, new_low

    if freq is not None:
        check_frequency(ns, freq, where)
    check_scale(values, where)

    out = pd.DataFrame(values, columns=list(FEATURES))
    out.insert(0, TIMESTAMP, pd.DatetimeIndex(ns.astype("datetime64[ns]")))
    return out, report
