"""Validation and repair of one symbol's raw K-lines (cells are read by `parsing`).

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

An absent, entirely empty or all-zero ``amount`` column (the public README's "not available")
is the documented convention, not a repair: it is derived for the whole symbol and reported as
``amount_derived``; forecasting (``forecasting/inputs.py``) reads such a column the same way.
Qlib calendar slots where a symbol did not trade (all of open..volume NaN) are dropped and
counted as ``untraded_rows_dropped`` under both policies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kronos_engine.data.bars import (
    ALLOWED_VALUES,
    F32_MAX,
    amount_unavailable,
    first_ohlc_problem,
    first_value_problem,
    invalid_cells,
)
from kronos_engine.data.features import FEATURES, NORM_EPS
from kronos_engine.data.frequency import detect_freq, is_auto
from kronos_engine.data.parsing import RowLocator, parse_numbers, parse_timestamps
from kronos_engine.data.schema import ROW, TIMESTAMP, Freq
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


@dataclass
class CleanReport:
    """What cleaning did to one symbol, for the build summary."""

    repairs: Counter = field(default_factory=Counter)
    amount_derived: bool = False
    untraded_rows_dropped: int = 0
    freq: Freq | None = None  # the bar length checked (measured with freq: auto)


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
    freq: Freq | str | None = None,
) -> tuple[pd.DataFrame, CleanReport]:
    """Validate (and with ``policy='repair'`` fix) a frame from ``canonical_columns``.

    ``freq``: the bar length to check, ``"auto"`` to measure it first (``report.freq``), or
    None for no check. Returns a frame with ``timestamps`` (datetime64[ns], sorted, unique)
    and the six features as float64, restricted to ``bounds`` (``(lo_ns inclusive, hi_ns
    exclusive)``).
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
    amount_absent = "amount" not in names or amount_unavailable(values[:, 5])

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
    nonfinite, nonpositive = invalid_cells(values)
    invalid = nonfinite | nonpositive
    if invalid.any():
        if not repair:
            problem = first_value_problem(values)
            raise DataError(f"{where(problem.row)}: {problem.text}; {_hint('forward-fills them')}")
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
        overflow = np.flatnonzero(~(np.abs(values[:, 5]) <= F32_MAX))
    if overflow.size:  # derived price * volume beyond float32 (never repairable)
        i = int(overflow[0])
        raise DataError(
            f"{where(i)}: amount = mean(open, high, low, close) * volume = "
            f"{float(values[i, 5]):.3g} overflows float32 ({overflow.size} row(s)); "
            f"{ALLOWED_VALUES}; rescale the prices or the volume"
        )

    # --- high / low must bound open / close ---
    if not repair:
        problem = first_ohlc_problem(values)
        if problem is not None:
            raise DataError(
                f"{where(problem.row)}: {problem.text}; "
                f"{_hint('sets high/low to the max/min of the four')}"
            )
    else:
        o, h, low, c = (values[:, k] for k in range(4))
        top, bottom = np.maximum(o, c), np.minimum(o, c)
        new_high = np.maximum(h, np.maximum(top, low))
        new_low = np.minimum(low, np.minimum(bottom, h))
        changed = (new_high != h) | (new_low != low)
        if changed.any():
            report.repairs["high_low_fixed"] += int(changed.sum())
            values[:, 1], values[:, 2] = new_high, new_low

    if is_auto(freq):
        freq = detect_freq(ns, f"{origin}: symbol {symbol}")
    if freq is not None:
        check_frequency(ns, freq, where)
        report.freq = freq
    check_scale(values, where)

    out = pd.DataFrame(values, columns=list(FEATURES))
    out.insert(0, TIMESTAMP, pd.DatetimeIndex(ns.astype("datetime64[ns]")))
    return out, report
