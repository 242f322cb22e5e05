"""Significance of forecast comparisons (`kronos_engine.evaluation.significance`): the t
distribution, Newey-West and DM by hand, the block bootstrap against an explicit resample, the
size and power of the tests by simulation (seeded), and `scripts/evaluate.py` on the demo data
writing one sentence per pair to report.md and a `significance` section to metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import tiny_demo_predictor
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.evaluation import significance as S
from kronos_engine.evaluation.report import significance_markdown

SEEDS = 200


# ------------------------------------------------------------------ distributions


def test_student_t_p_values_match_closed_forms_and_tables():
    for t in (0.1, 1.0, 2.5, 10.0):
        cauchy = 1.0 - 2.0 * math.atan(t) / math.pi  # df = 1
        assert S.t_two_sided_p(t, 1) == pytest.approx(cauchy, rel=1e-10)
        assert S.t_two_sided_p(-t, 2) == pytest.approx(1.0 - t / math.sqrt(2 + t * t), rel=1e-10)
        normal = 2.0 * (1.0 - S.normal_cdf(t))
        assert S.t_two_sided_p(t, 1e8) == pytest.approx(normal, rel=1e-5, abs=1e-12)
    assert S.t_two_sided_p(2.042272456, 30) == pytest.approx(0.05, abs=1e-8)  # t table, df 30
    assert S.t_two_sided_p(0.0, 5) == 1.0
    assert math.isnan(S.t_two_sided_p(float("nan"), 5))


# ------------------------------------------------------------------ by hand


def test_newey_west_variance_matches_a_hand_computation():
    # x = 1, 3, 2, 6: mean 3, deviations -2, 0, -1, 3 (autocovariances divided by n = 4)
    # gamma_0 = (4 + 0 + 1 + 9) / 4 = 3.5
    # gamma_1 = (0*-2 + -1*0 + 3*-1) / 4 = -0.75
    # gamma_2 = (-1*-2 + 3*0) / 4 = 0.5
    x = np.array([1.0, 3.0, 2.0, 6.0])
    assert S.newey_west_variance(x, 0) == pytest.approx(3.5)
    assert S.newey_west_variance(x, 1) == pytest.approx(3.5 + 2 * (1 / 2) * -0.75)  # 2.75
    assert S.newey_west_variance(x, 2) == pytest.approx(
        3.5 + 2 * ((2 / 3) * -0.75 + (1 / 3) * 0.5)
    )  # 2.8333...
    assert S.uniform_kernel_variance(x, 2) == pytest.approx(3.5 + 2 * (-0.75 + 0.5))  # 3.0
    t, p = S.newey_west_t(x, 2)
    assert t == pytest.approx(3.0 / math.sqrt(2.8333333333333335 / 4))  # 3.5645
    assert p == pytest.approx(S.t_two_sided_p(t, 3))


def test_dm_at_horizon_one_is_the_paired_t_test():
    """With h = 1 the HLN factor sqrt((n - 1) / n) turns gamma_0 / n into the sample variance
    with ddof 1: DM is the paired t statistic, with n - 1 degrees of freedom."""
    rng = np.random.default_rng(3)
    a, b = rng.gamma(2.0, size=40), rng.gamma(2.1, size=40)
    d = a - b
    stat, p = S.diebold_mariano(a, b, horizon=1)
    assert stat == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)), rel=1e-12)
    assert p == pytest.approx(S.t_two_sided_p(stat, 39), rel=1e-12)


@pytest.mark.parametrize(
    "d, kernel",
    [
        ([0.5, 0.6, 0.3, -0.2, -0.1, 0.4], "uniform"),  # variance 0.075 > 0
        ([0.5, -0.1, 0.3, 0.9, -0.2, 0.4], "bartlett"),  # uniform variance -0.067: Bartlett
    ],
)
def test_dm_with_overlap_matches_a_hand_computation(d, kernel):
    d = np.array(d)  # loss_a - loss_b, h = 3 (lags 1 and 2)
    n, h, mean = 6, 3, d.mean()
    dev = d - mean
    gamma = [float(np.sum(dev[k:] * dev[: n - k]) / n) for k in range(3)]
    if kernel == "uniform":
        var = gamma[0] + 2 * (gamma[1] + gamma[2])
    else:
        var = gamma[0] + 2 * (2 / 3 * gamma[1] + 1 / 3 * gamma[2])
    assert var > 0
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    stat, p = S.diebold_mariano(d, np.zeros(n), horizon=h)
    assert stat == pytest.approx(mean / math.sqrt(var / n) * hln, rel=1e-12)
    assert p == pytest.approx(S.t_two_sided_p(stat, n - 1), rel=1e-12)
    assert all(math.isnan(v) for v in S.diebold_mariano(d, d, horizon=h))  # no difference


def test_ic_t_statistics_match_a_direct_computation():
    rng = np.random.default_rng(11)
    ic = 0.03 + 0.1 * rng.standard_normal(50)
    ic[[4, 17]] = np.nan  # dates with an undefined IC are left out
    rank_ic = 0.1 * rng.standard_normal(50)
    horizon = 5
    got = S.ic_tests({"m": {"ic": ic, "rank_ic": rank_ic}, "naive": {"ic": np.full(3, np.nan)}}, 5)
    assert list(got) == ["m"]  # a model without any IC has no test
    for name, values in (("ic", ic[np.isfinite(ic)]), ("rank_ic", rank_ic)):
        n, lag = values.size, horizon - 1
        dev = values - values.mean()
        var = float(dev @ dev) / n
        for k in range(1, lag + 1):
            var += 2 * (1 - k / (lag + 1)) * float(dev[k:] @ dev[:-k]) / n
        t = values.mean() / math.sqrt(var / n)
        assert got["m"][name] == pytest.approx(values.mean())
        assert got["m"][f"{name}_t"] == pytest.approx(t, rel=1e-12)
        assert got["m"][f"{name}_p"] == pytest.approx(S.t_two_sided_p(t, n - 1), rel=1e-12)
        assert got["m"][f"{name}_dates"] == n


# ------------------------------------------------------------------ block bootstrap


def test_block_length_rule():
    assert S.block_length(250, 1) == 7  # ceil(250 ** (1/3)) = 7
    assert S.block_length(125, 1) == 5  # exactly 5, not 6 from rounding
    assert S.block_length(250, 10) == 10  # the horizon's overlap when longer
    assert S.block_length(6, 10) == 6  # never longer than the sample


def test_block_means_equal_an_explicit_resample():
    x = np.arange(10.0) ** 2
    y = np.sin(np.arange(10.0))
    block, resamples = 3, 5
    got = S.block_means(np.stack([x, y]), block, resamples, np.random.default_rng(4))
    starts = np.random.default_rng(4).integers(0, 10 - block + 1, size=(resamples, 4))
    for r in range(resamples):
        idx = np.concatenate([np.arange(s, s + block) for s in starts[r]])[:10]
        np.testing.assert_allclose(got[r], [x[idx].mean(), y[idx].mean()], rtol=1e-12)


# ------------------------------------------------------------------ size and power


def _daily_losses(rng: np.random.Generator, n: int, scale_a: float) -> tuple[np.ndarray, ...]:
    """Per-date MAE over 5 symbols of two forecasters of the same truth, with independent
    noise of sizes `scale_a` and 1."""
    truth = rng.standard_normal((n, 5))
    a = truth + scale_a * rng.standard_normal((n, 5))
    b = truth + rng.standard_normal((n, 5))
    return np.abs(a - truth).mean(axis=1), np.abs(b - truth).mean(axis=1)


def test_identical_forecasters_give_uniform_p_values_and_nominal_coverage():
    p_values, covered = [], []
    for seed in range(SEEDS):
        a, b = _daily_losses(np.random.default_rng(seed), 250, 1.0)
        c = S.compare_losses(a, b, horizon=1, seed=seed, resamples=1000)
        p_values.append(c.p_value)
        covered.append(c.ci[0] <= 0 <= c.ci[1])
    p = np.sort(p_values)
    assert ((p > 0) & (p < 1)).all()
    ks = np.max(np.abs(np.arange(1, SEEDS + 1) / SEEDS - p))  # Kolmogorov-Smirnov vs U(0, 1)
    assert ks < 1.63 / math.sqrt(SEEDS)  # its 1% critical value
    share = np.mean(p < 0.1)
    assert abs(share - 0.1) < 3 * math.sqrt(0.1 * 0.9 / SEEDS)
    coverage = np.mean(covered)
    assert abs(coverage - 0.95) < 3 * math.sqrt(0.95 * 0.05 / SEEDS)


def test_a_fixed_improvement_gives_intervals_below_zero():
    for seed in range(20):
        a, b = _daily_losses(np.random.default_rng(seed), 250, 0.8)
        c = S.compare_losses(a, b, horizon=4, seed=seed)
        assert c.ci[1] < 0 and c.rel_ci[1] < 0 and c.p_value < 0.01 and c.dm_stat < 0
        assert c.ci[0] < c.mean_diff < c.ci[1]
        assert c.block_length == 7 and c.lag == 3 and c.n_dates == 250


def test_models_are_compared_on_their_common_dates_only():
    dates_a, dates_b = np.arange(0, 40), np.arange(10, 50)
    la = {"mae": np.linspace(1, 2, 40)}
    lb = {"mae": np.linspace(1, 2, 40) + 0.5, "crps": np.ones(40)}
    pairs = S.compare_models({"a": (dates_a, la), "b": (dates_b, lb)}, horizon=2, seed=1)
    assert [(p["model"], p["other"], p["metric"]) for p in pairs] == [("a", "b", "mae")]
    common = S.compare_losses(la["mae"][10:], lb["mae"][:30], horizon=2, seed=1)
    assert pairs[0] == {"model": "a", "other": "b", "metric": "mae", **common.to_dict()}


# ------------------------------------------------------------------ evaluate on the demo data


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return tiny_demo_predictor(tmp_path_factory.mktemp("sig"))


FAST = ["--no_plots", "--no_progress"]


def test_evaluate_writes_a_sentence_per_pair_and_the_metrics_section(demo_run, tmp_path):
    out = tmp_path / "eval"
    argv = ["--exp_dir", str(demo_run), "--output", str(out), *FAST, "--bootstrap_seed", "7"]
    assert evaluate_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    section = json.loads((out / "significance.json").read_text())
    assert list(metrics) == ["kronos", "naive", "drift"]  # models only: the tests are beside
    assert section["seed"] == 7 and section["horizon"] == 4 and section["confidence"] == 0.95
    pairs = {(p["model"], p["other"], p["metric"]): p for p in section["pairs"]}
    assert set(pairs) == {
        (a, b, m)
        for a, b in (("kronos", "naive"), ("kronos", "drift"), ("naive", "drift"))
        for m in ("mae", "mse", "mase")
    }
    n_dates = int(metrics["kronos"]["origins"]) // 4  # 4 symbols on every origin date
    for p in pairs.values():
        assert p["n_dates"] == n_dates and p["block_length"] == S.block_length(n_dates, 4)
        assert p["ci"][0] <= p["ci"][1] and 0 <= p["p_value"] <= 1
    # The per-date losses average to the overall metric: every date has the same cells.
    mae = pairs[("kronos", "naive", "mae")]
    assert mae["mean_a"] == pytest.approx(metrics["kronos"]["mae"], rel=1e-9)
    assert mae["mean_b"] == pytest.approx(metrics["naive"]["mae"], rel=1e-9)
    assert section["ic"]["kronos"]["ic"] == pytest.approx(metrics["kronos"]["ic"], rel=1e-9)
    assert "naive" not in section["ic"]  # a constant predicted return has no IC
    report = (out / "report.md").read_text()
    sentences = [line for line in report.splitlines() if "95% CI" in line]
    assert len(sentences) == 3  # one per pair, on MAE
    for (a, b), line in zip(
        (("kronos", "naive"), ("kronos", "drift"), ("naive", "drift")), sentences
    ):
        p = pairs[(a, b, "mae")]
        assert line.startswith("- ") and a in line and b in line and "DM p" in line
        word = "lower" if p["mean_diff"] < 0 else "higher"
        assert f"MAE {word} by {100 * abs(p['rel_diff']):.3g}%" in line
        assert f"{p['n_dates']} dates" in line
    assert "IC" in report and "t = " in report

    again = tmp_path / "again"
    assert evaluate_main([*argv[:3], str(again), *argv[4:]]) == 0
    assert json.loads((again / "significance.json").read_text()) == section
    other_seed = tmp_path / "seed8"
    assert evaluate_main([*argv[:3], str(other_seed), *argv[4:-1], "8"]) == 0
    changed = json.loads((other_seed / "significance.json").read_text())
    assert changed["seed"] == 8 and changed["pairs"][0]["ci"] != section["pairs"][0]["ci"]
    assert changed["pairs"][0]["p_value"] == section["pairs"][0]["p_value"]  # DM has no draws


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--bootstrap_seed", "-1"], "--bootstrap_seed: must be >= 0, got -1"),
    ],
)
def test_bad_significance_arguments_are_one_line_and_touch_nothing(
    demo_run, tmp_path, capsys, extra, needle
):
    before = snapshot(demo_run)
    argv = ["--exp_dir", str(demo_run), "--output", str(tmp_path / "eval"), *FAST, *extra]
    assert evaluate_main(argv) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    _assert_untouched(before, snapshot(demo_run))
    assert not (tmp_path / "eval").exists()


def test_the_report_says_when_two_models_cannot_be_told_apart():
    dates = np.arange(30)
    same = {"mae": np.linspace(1.0, 2.0, 30)}
    rng = np.random.default_rng(2)
    noisy = {"mae": same["mae"] + 0.01 * rng.standard_normal(30)}
    losses = {"kronos": (dates, same), "again": (dates, same), "other": (dates, noisy)}
    section = {**S.method_record(2, 0), "pairs": S.compare_models(losses, 2, 0), "ic": {}}
    lines = [line for line in significance_markdown(section) if line.startswith("- ")]
    assert lines[0] == "- kronos and again have the same MAE on every one of the 30 dates."
    assert lines[1].startswith("- kronos vs other: no significant difference at the 5% level")
    one = S.compare_models({"a": (dates[:1], same), "b": (dates[:1], noisy)}, 2, 0)
    text = significance_markdown({**S.method_record(2, 0), "pairs": one, "ic": {}})
    assert "- a vs b: too few dates (1) to test the MAE difference." in text
