"""Is a difference between two forecasters real? Paired statistics over origin dates, numpy only
(scipy is not a dependency: the Student t CDF is computed here, from the incomplete beta).

The rules `evaluate.py` follows (recorded in `metrics.json` under `significance`):

* **Per-date losses.** Each model's per-(origin, symbol) losses are averaged over the symbols and
  horizon steps of one origin date first, so the dependence across symbols within a date is
  absorbed by the aggregation and only the dependence over time is left to handle.
* **Dependence over time.** Forecasts `h` steps ahead from consecutive origins share `h - 1`
  future bars, so per-date losses are autocorrelated up to lag `h - 1`. Lags and blocks count
  origin dates; where `--stride` or `--max_origins` space the dates further apart than one bar,
  `h - 1` lags cover more than the overlap (conservative).
* **Diebold-Mariano** (1995): ``DM = mean(d) / sqrt(V / n)`` for the loss differences ``d``, with
  ``V`` the long-run variance with ``h - 1`` lags and the uniform (truncated) kernel, the variance
  DM and Harvey, Leybourne & Newbold (1997) use (and R's `forecast::dm.test`); where that
  estimate is not positive, the Newey-West (Bartlett) one with the same lags. The HLN factor
  ``sqrt((n + 1 - 2h + h(h - 1) / n) / n)`` and a Student t with ``n - 1`` degrees of freedom
  give the two-sided p-value. (Bartlett weights at lag ``h - 1`` underestimate the variance of
  an MA(h - 1): in simulations of overlapping 4-step forecasts such a test rejected 16% of the
  time at the 10% level, the uniform kernel 12%.)
* **Confidence interval** of the mean difference: percentile interval of a moving-block
  bootstrap (Kunsch 1989) over dates, blocks of ``L = max(h, ceil(n ** (1/3)))`` dates (at most
  ``n``), ``ceil(n / L)`` block starts drawn uniformly among the ``n - L + 1``, the concatenation
  cut to ``n`` dates; the same draws give the interval of the relative difference
  ``mean(a) / mean(b) - 1``. Seeded, so a report is reproducible.
* **IC / RankIC**: the Newey-West t-statistic (Bartlett kernel, ``h - 1`` lags) of the mean of the
  daily values, p-value from a Student t with ``n - 1`` degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kronos_engine.evaluation.scoring import MetricAccumulator

CONFIDENCE = 0.95
RESAMPLES = 2000


# ------------------------------------------------------------------ distributions


def normal_cdf(x: float) -> float:
    """Standard normal CDF via `math.erf` (no scipy)."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz, as in Numerical
    Recipes' `betacf`); converges fast for ``x < (a + 1) / (a + b + 2)``."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value ``P(|T| >= |t|)`` of a Student t with `df` degrees of freedom:
    ``I_{df / (df + t^2)}(df / 2, 1 / 2)``. NaN in, NaN out."""
    if not (math.isfinite(t) and df > 0):
        return float("nan")
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


# ------------------------------------------------------------------ long-run variance


def _autocovariances(x: np.ndarray, lag: int) -> np.ndarray:
    """``gamma_0 .. gamma_lag`` of `x` around its mean, each divided by ``n`` (not ``n - k``),
    the convention of Newey-West and DM."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    n = x.size
    return np.array([x[k:] @ x[: n - k] / n for k in range(min(lag, n - 1) + 1)])


def newey_west_variance(x: np.ndarray, lag: int) -> float:
    """Long-run variance of `x` with the Bartlett kernel (Newey & West 1987):
    ``gamma_0 + 2 * sum_{k=1..lag} (1 - k / (lag + 1)) gamma_k``; never negative."""
    gamma = _autocovariances(x, lag)
    weights = 1.0 - np.arange(1, gamma.size) / (lag + 1.0)
    return float(gamma[0] + 2.0 * np.sum(weights * gamma[1:]))


def uniform_kernel_variance(x: np.ndarray, lag: int) -> float:
    """Long-run variance with equal weights on lags ``1 .. lag`` (DM 1995's estimator, exact for
    an MA(lag)); can be negative in small samples."""
    gamma = _autocovariances(x, lag)
    return float(gamma[0] + 2.0 * np.sum(gamma[1:]))


def newey_west_t(x: np.ndarray, lag: int) -> tuple[float, float]:
    """t-statistic of ``mean(x) = 0`` with the Newey-West standard error, and its two-sided
    p-value (Student t, ``n - 1`` df). NaN when fewer than 2 finite values or no variance."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    var = newey_west_variance(x, lag)
    if not var > 0:
        return float("nan"), float("nan")
    t = float(x.mean() / math.sqrt(var / x.size))
    return t, t_two_sided_p(t, x.size - 1)


# ------------------------------------------------------------------ Diebold-Mariano


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int) -> tuple[float, float]:
    """HLN-corrected Diebold-Mariano statistic of ``loss_a - loss_b`` (negative: `a` has the
    lower loss) and its two-sided p-value; NaN when undefined (fewer than 2 dates, identical
    losses, or a horizon too long for the HLN factor)."""
    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    n, h = d.size, int(horizon)
    if n < 2:
        return float("nan"), float("nan")
    var = uniform_kernel_variance(d, h - 1)
    if not var > 0:
        var = newey_west_variance(d, h - 1)
    factor = (n + 1 - 2 * h + h * (h - 1) / n) / n
    if not (var > 0 and factor > 0):
        return float("nan"), float("nan")
    stat = float(d.mean() / math.sqrt(var / n) * math.sqrt(factor))
    return stat, t_two_sided_p(stat, n - 1)


# ------------------------------------------------------------------ moving-block bootstrap


def block_length(n: int, horizon: int) -> int:
    """``max(horizon, ceil(n ** (1/3)))``, at most `n`: a block spans the overlap of the
    horizon, and grows with the sample as the usual ``n^(1/3)`` rate asks."""
    return max(1, min(n, max(int(horizon), math.ceil(n ** (1.0 / 3.0) - 1e-9))))


def block_means(
    series: np.ndarray, block: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Means of `resamples` moving-block resamples of each row of `series` ``(k, n)``, every row
    resampled with the same blocks (paired); ``(resamples, k)``. Uses cumulative sums, so it
    costs ``O(resamples * n / block)``, not ``O(resamples * n)``."""
    series = np.atleast_2d(np.asarray(series, dtype=np.float64))
    n = series.shape[1]
    count = -(-n // block)
    rest = n - (count - 1) * block  # the last block is cut to fill exactly n dates
    starts = rng.integers(0, n - block + 1, size=(resamples, count))
    cum = np.concatenate([np.zeros((series.shape[0], 1)), np.cumsum(series, axis=1)], axis=1)
    full = cum[:, starts[:, :-1] + block] - cum[:, starts[:, :-1]]
    last = cum[:, starts[:, -1] + rest] - cum[:, starts[:, -1]]
    return ((full.sum(axis=2) + last) / n).T


@dataclass
class Comparison:
    """Model `a` against model `b` on one loss, over the dates both have."""

    n_dates: int
    mean_a: float
    mean_b: float
    mean_diff: float  # mean(a - b): negative when a has the lower loss
    ci: tuple[float, float]
    rel_diff: float  # mean(a) / mean(b) - 1
    rel_ci: tuple[float, float]
    dm_stat: float
    p_value: float
    block_length: int
    lag: int

    def to_dict(self) -> dict:
        return asdict(self)


def compare_losses(
    loss_a: np.ndarray,
    loss_b: np.ndarray,
    horizon: int,
    seed: int,
    resamples: int = RESAMPLES,
) -> Comparison:
    """The mean difference with its block-bootstrap interval and the DM test, for per-date
    losses of two models on the same dates (NaN rows of either are left out, pairwise)."""
    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-date losses differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = a.size
    nan = float("nan")
    block = block_length(n, horizon) if n else 0
    ci = rel_ci = (nan, nan)
    if n >= 2:
        means = block_means(np.stack([a, b]), block, resamples, np.random.default_rng(seed))
        tails = [(1.0 - CONFIDENCE) / 2.0, (1.0 + CONFIDENCE) / 2.0]
        ci = _pair(np.quantile(means[:, 0] - means[:, 1], tails))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = means[:, 0] / means[:, 1] - 1.0
        if np.isfinite(ratio).all():
            rel_ci = _pair(np.quantile(ratio, tails))
    mean_a, mean_b = (float(a.mean()), float(b.mean())) if n else (nan, nan)
    stat, p = diebold_mariano(a, b, horizon)
    return Comparison(
        n_dates=int(n),
        mean_a=mean_a,
        mean_b=mean_b,
        mean_diff=mean_a - mean_b,
        ci=ci,
        rel_diff=mean_a / mean_b - 1.0 if mean_b > 0 else nan,
        rel_ci=rel_ci,
        dm_stat=stat,
        p_value=p,
        block_length=int(block),
        lag=max(int(horizon) - 1, 0),
    )


def _pair(values: np.ndarray) -> tuple[float, float]:
    return float(values[0]), float(values[1])


# ------------------------------------------------------------------ evaluate's section


def method_record(horizon: int, seed: int, resamples: int = RESAMPLES) -> dict:
    """How the numbers of a `significance` section were made (for `metrics.json`)."""
    return {
        "horizon": int(horizon),
        "seed": int(seed),
        "resamples": int(resamples),
        "confidence": CONFIDENCE,
        "per_date_loss": "mean over the symbols and horizon steps of each origin date",
        "interval": "percentile, moving-block bootstrap over dates, block max(h, ceil(n^(1/3)))",
        "dm": "Diebold-Mariano, uniform kernel with h - 1 lags (Bartlett if not positive), "
        "Harvey-Leybourne-Newbold factor, Student t with n - 1 df",
        "ic_t": "Newey-West (Bartlett, h - 1 lags) t of the mean daily IC, Student t with n - 1 df",
    }


def compare_models(
    losses: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]],
    horizon: int,
    seed: int,
    resamples: int = RESAMPLES,
) -> list[dict]:
    """Every pair of models (in the given order) on every loss both have, over their common
    dates. `losses`: model -> (sorted dates, {loss name: per-date values})."""
    names = list(losses)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (dates_a, la), (dates_b, lb) = losses[a], losses[b]
            _, ia, ib = np.intersect1d(dates_a, dates_b, assume_unique=True, return_indices=True)
            for metric in [m for m in la if m in lb]:
                c = compare_losses(la[metric][ia], lb[metric][ib], horizon, seed, resamples)
                pairs.append({"model": a, "other": b, "metric": metric, **c.to_dict()})
    return pairs


def ic_tests(daily: dict[str, dict[str, np.ndarray]], horizon: int) -> dict[str, dict]:
    """Newey-West t of each model's mean daily IC / RankIC (models with none left out)."""
    out: dict[str, dict] = {}
    for model, series in daily.items():
        record: dict[str, float | int] = {}
        for name, values in series.items():
            values = np.asarray(values, dtype=np.float64)
            values = values[np.isfinite(values)]
            if not values.size:
                continue
            t, p = newey_west_t(values, max(int(horizon) - 1, 0))
            record |= {name: float(values.mean()), f"{name}_t": t, f"{name}_p": p}
            record[f"{name}_dates"] = int(values.size)
        if record:
            out[model] = record
    return out


def section_of(acc: MetricAccumulator, horizon: int, seed: int) -> dict:
    """The `significance` section: every pair of models on every per-date loss (mean
    difference, block-bootstrap interval, Diebold-Mariano) and each model's IC t-statistics."""
    losses = {}
    for model in acc.models:
        daily = acc.daily_losses(model)
        dates = daily.index.to_numpy().astype("datetime64[ns]").astype(np.int64)
        losses[model] = (dates, {c: daily[c].to_numpy(np.float64) for c in daily.columns})
    ics = {}
    for model in acc.models:
        daily = acc.daily_ic(model)
        ics[model] = {c: daily[c].to_numpy(np.float64) for c in ("ic", "rank_ic") if c in daily}
    return {
        **method_record(horizon, seed),
        "pairs": compare_models(losses, horizon, seed),
        "ic": ic_tests(ics, horizon),
    }
