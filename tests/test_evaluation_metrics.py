"""Forecast metrics against values computed by hand on tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kronos_engine.evaluation import metrics as M


def test_perfect_forecast_has_zero_errors_and_ic_one():
    true = np.array([[10.0, 11.0], [20.0, 19.0]])
    assert M.mae(true, true) == 0.0
    assert M.rmse(true, true) == 0.0
    assert M.mape(true, true) == 0.0
    assert M.mase(true, true, np.array([[1.0], [2.0]])) == 0.0
    dates = np.array(["d1", "d1", "d1", "d2", "d2", "d2"])
    returns = np.array([0.01, -0.02, 0.03, 0.05, 0.0, -0.01])
    assert M.daily_ic(dates, returns, returns).tolist() == pytest.approx([1.0, 1.0])
    assert M.daily_ic(dates, returns, returns, "spearman").tolist() == pytest.approx([1.0, 1.0])
    assert M.direction_accuracy(returns, returns) == 1.0


def test_errors_by_hand():
    pred = np.array([12.0, 8.0, 10.0, 5.0])
    true = np.array([10.0, 10.0, 10.0, 4.0])
    # |e| = 2, 2, 0, 1
    assert M.mae(pred, true) == pytest.approx(5 / 4)
    assert M.rmse(pred, true) == pytest.approx(math.sqrt(9 / 4))
    assert M.mape(pred, true) == pytest.approx((0.2 + 0.2 + 0 + 0.25) / 4)


def test_mase_uses_the_lookbacks_mean_one_step_change():
    lookback = np.array([[10.0, 12.0, 11.0, 14.0]])  # |diffs| = 2, 1, 3 -> scale 2
    scale = M.mase_scale(lookback)
    assert scale.tolist() == [2.0]
    assert M.mase(np.array([[15.0, 13.0]]), np.array([[14.0, 14.0]]), scale[:, None]) == 0.5


def test_naive_forecast_has_skill_zero_and_a_perfect_one_skill_one():
    assert M.skill(3.0, 3.0) == 0.0
    assert M.skill(0.0, 3.0) == 1.0
    assert M.skill(6.0, 3.0) == -1.0
    assert math.isnan(M.skill(1.0, 0.0))


def test_crps_of_known_cases():
    # One sample: the absolute error.
    assert M.crps_ensemble(np.array([[3.0]]), np.array([1.0])).tolist() == [2.0]
    # Samples {0, 1}, y = 0: E|X-y| = 0.5, E|X-X'| = 0.5 -> 0.5 - 0.25.
    assert M.crps_ensemble(np.array([0.0, 1.0]), np.array(0.0)) == pytest.approx(0.25)
    # Samples {0, 2, 4}, y = 1: E|X-y| = (1+1+3)/3, E|X-X'| = (2+4+2+2+4+2)/9 = 16/9.
    assert M.crps_ensemble(np.array([4.0, 0.0, 2.0]), np.array(1.0)) == pytest.approx(5 / 3 - 8 / 9)


def test_crps_of_a_gaussian_quantile_ensemble_matches_the_closed_form():
    """N(0, sigma) sampled at its 4000 mid-quantiles vs Gneiting & Raftery's formula."""
    sigma, y = 2.0, 0.7
    probs = (np.arange(4000) + 0.5) / 4000
    inv = np.vectorize(lambda p: _norm_ppf(p))
    samples = sigma * inv(probs)
    z = y / sigma
    pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    exact = sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    assert M.crps_ensemble(samples, np.array(y)) == pytest.approx(exact, rel=2e-3)


def _norm_ppf(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(80):  # bisection on the CDF: exact enough and dependency-free
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_coverage_counts_actuals_inside_the_interval():
    lower = np.array([0.0, 0.0, 0.0, 0.0])
    upper = np.array([1.0, 1.0, 1.0, 1.0])
    assert M.coverage(lower, upper, np.array([0.5, 1.0, 1.5, -0.1])) == 0.5


def test_ic_and_rank_ic_by_hand():
    dates = np.array(["a"] * 3 + ["b"] * 3)
    pred = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    true = np.array([1.0, 2.0, 10.0, 3.0, 2.0, 1.0])
    ic = M.daily_ic(dates, pred, true)
    # date a: Pearson of [1,2,3] and [1,2,10] from its definition
    t = np.array([1.0, 2.0, 10.0])
    expected_a = np.sum((pred[:3] - 2) * (t - t.mean())) / (
        np.sqrt(np.sum((pred[:3] - 2) ** 2)) * np.sqrt(np.sum((t - t.mean()) ** 2))
    )
    assert ic["a"] == pytest.approx(expected_a)
    assert ic["b"] == pytest.approx(-1.0)
    rank = M.daily_ic(dates, pred, true, "spearman")
    assert rank.tolist() == pytest.approx([1.0, -1.0])
    mean, icir = M.ic_summary(rank)
    assert mean == pytest.approx(0.0)
    assert icir == pytest.approx(0.0)
    mean, icir = M.ic_summary(pd.Series([0.1, 0.3]))
    assert mean == pytest.approx(0.2)
    assert icir == pytest.approx(0.2 / np.std([0.1, 0.3], ddof=1))


def test_ic_skips_dates_with_one_instrument_or_a_constant_side():
    dates = np.array(["a", "b", "b", "c", "c"])
    pred = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    true = np.array([1.0, 1.0, 2.0, 1.0, 2.0])
    assert M.daily_ic(dates, pred, true).index.tolist() == ["c"]


def test_direction_accuracy_by_hand():
    assert (
        M.direction_accuracy(np.array([0.1, -0.1, 0.2, 0.0]), np.array([0.3, 0.1, 0.1, 0.0]))
        == 0.75
    )
