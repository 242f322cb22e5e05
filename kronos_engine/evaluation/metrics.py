"""Forecast metrics as pure numpy functions on the raw (de-normalised) price scale.

Each function takes plain arrays so the report, the training-time callback and the tests
compute every number the same way. Conventions:

* errors are ``pred - true``; MAPE is a fraction (0.05 is 5%);
* MASE divides each absolute error by its origin's scale, the mean absolute one-step change of
  the close over that origin's lookback (Hyndman & Koehler 2006, in-sample naive MAE);
* CRPS of an ensemble is ``E|X - y| - 0.5 E|X - X'|`` over its samples (the energy form; a
  single sample gives the absolute error);
* IC / RankIC are the Qlib convention: Pearson / Spearman correlation across instruments on
  each date, then the mean over dates, and ICIR = mean / std (ddof 1) of the daily values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Nominal interval -> (lower quantile, upper quantile) of the central interval.
INTERVALS: dict[str, tuple[float, float]] = {"coverage_80": (0.1, 0.9), "coverage_90": (0.05, 0.95)}
# Quantiles written per forecast when sampling: the interval bounds plus the median and
# quartiles, enough for a calibration curve.
EVAL_QUANTILES: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def _arrays(*values: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(v, dtype=np.float64) for v in values]
    shape = out[0].shape
    for v in out[1:]:
        if v.shape != shape:
            raise ValueError(f"metric inputs differ in shape: {shape} vs {v.shape}")
    return out


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error."""
    p, t = _arrays(pred, true)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error."""
    p, t = _arrays(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2))) if p.size else float("nan")


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute percentage error as a fraction; rows with a zero actual are left out."""
    p, t = _arrays(pred, true)
    keep = t != 0
    return float(np.mean(np.abs(p[keep] - t[keep]) / np.abs(t[keep]))) if keep.any() else np.nan


def mase_scale(lookback_close: np.ndarray) -> np.ndarray:
    """Per-origin MASE denominators from closes ``(n_origins, lookback)``: the mean absolute
    one-step change (the in-sample naive forecast's MAE). Needs lookback >= 2."""
    close = np.asarray(lookback_close, dtype=np.float64)
    if close.ndim == 1:
        close = close[None]
    if close.shape[1] < 2:
        raise ValueError("MASE needs a lookback of at least 2 rows")
    return np.mean(np.abs(np.diff(close, axis=1)), axis=1)


def mase(pred: np.ndarray, true: np.ndarray, scale: np.ndarray) -> float:
    """Mean of ``|pred - true| / scale``; ``scale`` broadcasts (one per origin). Rows whose
    scale is zero (a flat lookback) are left out: their ratio is undefined."""
    p, t = _arrays(pred, true)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), p.shape)
    keep = s > 0
    return float(np.mean(np.abs(p[keep] - t[keep]) / s[keep])) if keep.any() else np.nan


def skill(model_mae: float, naive_mae: float) -> float:
    """``1 - MAE / MAE_naive``: 0 is as good as the naive forecast, 1 is perfect, < 0 worse."""
    if not naive_mae > 0:
        return float("nan")
    return float(1.0 - model_mae / naive_mae)


def direction_accuracy(pred_return: np.ndarray, true_return: np.ndarray) -> float:
    """Share of origins where the predicted horizon return has the sign of the actual one
    (a zero counts as its own sign)."""
    p, t = _arrays(pred_return, true_return)
    return float(np.mean(np.sign(p) == np.sign(t))) if p.size else float("nan")


def crps_ensemble(samples: np.ndarray, true: np.ndarray) -> np.ndarray:
    """CRPS of each forecast from its samples: ``samples`` ``(..., m)``, ``true`` ``(...)``.

    Uses the sorted-sample identity ``E|X - X'| = 2 / m^2 * sum_i (2i - m - 1) x_(i)``, so it
    costs ``O(m log m)`` instead of ``O(m^2)`` per forecast.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=-1)
    y = np.asarray(true, dtype=np.float64)
    if x.shape[:-1] != y.shape:
        raise ValueError(f"samples {x.shape} do not end in one axis after true {y.shape}")
    m = x.shape[-1]
    first = np.mean(np.abs(x - y[..., None]), axis=-1)
    weights = 2.0 * np.arange(1, m + 1) - m - 1
    spread = 2.0 / (m * m) * np.sum(weights * x, axis=-1)
    return first - 0.5 * spread


def coverage(lower: np.ndarray, upper: np.ndarray, true: np.ndarray) -> float:
    """Share of actuals inside ``[lower, upper]``."""
    lo, hi, t = _arrays(lower, upper, true)
    return float(np.mean((t >= lo) & (t <= hi))) if t.size else float("nan")


def horizon_return(close_end: np.ndarray, close_origin: np.ndarray) -> np.ndarray:
    """Return from the origin's close to the close at the end of the horizon."""
    end, origin = _arrays(close_end, close_origin)
    return end / origin - 1.0


def daily_ic(
    dates: np.ndarray, pred: np.ndarray, true: np.ndarray, method: str = "pearson"
) -> pd.Series:
    """Cross-sectional correlation of ``pred`` and ``true`` on each date (index = date).

    Dates with fewer than two instruments, or where either side is constant, are dropped:
    their correlation is undefined. ``method``: ``pearson`` (IC) or ``spearman`` (RankIC,
    Pearson of average ranks, as pandas and Qlib compute it).
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    frame = pd.DataFrame({"date": np.asarray(dates), "pred": pred, "true": true})
    frame = frame.dropna()
    if method == "spearman":
        grouped = frame.groupby("date")
        frame["pred"] = grouped["pred"].rank(method="average")
        frame["true"] = grouped["true"].rank(method="average")
    out = {}
    for date, group in frame.groupby("date", sort=True):
        p, t = group["pred"].to_numpy(), group["true"].to_numpy()
        if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
            continue
        out[date] = float(np.corrcoef(p, t)[0, 1])
    return pd.Series(out, dtype=np.float64, name="rank_ic" if method == "spearman" else "ic")


def ic_summary(daily: pd.Series) -> tuple[float, float]:
    """Mean and ICIR (mean / std with ddof 1) of daily ICs; NaN where undefined."""
    values = daily.dropna().to_numpy(dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan")
    std = float(values.std(ddof=1))
    return mean, (mean / std if std > 0 else float("nan"))
