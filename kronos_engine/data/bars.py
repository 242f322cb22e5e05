"""What a valid bar is, for training data and for forecasting inputs alike.

`clean_frame` (training, `bad_data: error|repair`) and `KronosPredictor` (forecasting) both
judge bars by these masks, so a bar the trainer refuses is never forecast from, and the other
way round. A bar is valid when every value is finite and fits float32 (the models compute in
float32: `1e39` would become inf), prices are > 0, volume and amount are >= 0, and high/low
bound open/close (within float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kronos_engine.data.features import FEATURES

F32_MAX = float(np.finfo(np.float32).max)
OHLC_RTOL = 1e-6  # float32 sources round prices; below this a high/low mismatch is noise
ALLOWED_VALUES = (
    "allowed: finite numbers of magnitude below 3.4e38 (stored as float32), prices > 0, "
    "volume and amount >= 0"
)
ALLOWED_OHLC = "allowed: low <= min(open, close) and max(open, close) <= high"


def amount_unavailable(amount: np.ndarray) -> bool:
    """An amount column that says "not available": empty, or all zero (the public README's
    convention); such a column is derived as mean price x volume, as an absent one is."""
    return bool(np.all(np.isnan(amount) | (amount == 0)))


def invalid_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(nonfinite, nonpositive)` masks over `(rows, 6)` feature values: non-finite or beyond
    float32; prices <= 0 or volume/amount < 0 (a NaN is only non-finite)."""
    with np.errstate(invalid="ignore"):
        nonfinite = ~np.isfinite(values) | (np.abs(values) > F32_MAX)
        nonpositive = np.zeros_like(nonfinite)
        nonpositive[:, :4] = values[:, :4] <= 0
        nonpositive[:, 4:] = values[:, 4:] < 0
    return nonfinite, nonpositive


def unbounded_ohlc(values: np.ndarray) -> np.ndarray:
    """Rows whose high/low do not bound open/close (high < low included)."""
    o, h, low, c = (values[:, k] for k in range(4))
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    tol = OHLC_RTOL * np.maximum(np.abs(top), np.abs(h))
    return (h < low) | (h < top - tol) | (low > bottom + tol)


@dataclass(frozen=True)
class BarProblem:
    """The first invalid bar: its row (0-based in the values given) and what is wrong."""

    row: int
    text: str


def first_value_problem(values: np.ndarray) -> BarProblem | None:
    """The first row with an invalid cell, described with the count of bad cells and rows."""
    nonfinite, nonpositive = invalid_cells(values)
    invalid = nonfinite | nonpositive
    if not invalid.any():
        return None
    bad_rows = np.flatnonzero(invalid.any(axis=1))
    i = int(bad_rows[0])
    j = int(np.flatnonzero(invalid[i])[0])
    return BarProblem(
        i,
        f"column {FEATURES[j]} is {float(values[i, j])!r} ({int(invalid.sum())} bad cell(s) "
        f"in {bad_rows.size} row(s)); {ALLOWED_VALUES}",
    )


def first_ohlc_problem(values: np.ndarray) -> BarProblem | None:
    """The first row whose high/low do not bound open/close, with the count of such rows."""
    broken = unbounded_ohlc(values)
    if not broken.any():
        return None
    i = int(np.flatnonzero(broken)[0])
    o, h, low, c = (float(values[i, k]) for k in range(4))
    return BarProblem(
        i,
        f"open {o:g} high {h:g} low {low:g} close {c:g} ({int(broken.sum())} such row(s)); "
        f"{ALLOWED_OHLC}",
    )


def first_bar_problem(values: np.ndarray) -> BarProblem | None:
    """The first problem a forecast input has: an invalid value, else an unbounded high/low."""
    return first_value_problem(values) or first_ohlc_problem(values)
