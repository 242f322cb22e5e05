"""The paper's other evaluation tasks in `scripts/evaluate.py`: realised volatility over the horizon
(`evaluation.volatility`: the definitions by hand, MAE and R^2 on known cases, an oracle whose
paths are the actuals) and test-time scaling (`evaluation.scaling`: one row per sample count,
reproducible seeds, the plot), and their flags refused in one line before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import tiny_cfg, tiny_demo_predictor
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.data import build_datasets
from kronos_engine.evaluation import volatility as V
from kronos_engine.evaluation.baselines import NaiveForecaster
from kronos_engine.evaluation.origins import plan_origins
from kronos_engine.evaluation.plots import scaling_plot
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
from kronos_engine.evaluation.scaling import SCALING_PLOT, run_seeds
from kronos_engine.forecasting.forecast import Forecast
from kronos_engine.forecasting.options import SamplingOptions

# ------------------------------------------------------------------ volatility by hand


def test_realised_path_and_historical_volatility_match_a_hand_computation():
    a, b = math.log(1.1), math.log(0.9)  # 100 -> 110 -> 99 -> 99
    realised = V.realised_vol(np.array([100.0]), np.array([[110.0, 99.0, 99.0]]))
    assert realised[0] == pytest.approx(math.sqrt(a**2 + b**2), rel=1e-12)
    # two paths: the one above and a flat one; the squares average, then the root
    paths = np.array([[[110.0, 99.0, 99.0], [100.0, 100.0, 100.0]]])
    forecast = V.path_vol(np.array([100.0]), paths)
    assert forecast[0] == pytest.approx(math.sqrt((a**2 + b**2) / 2), rel=1e-12)
    # lookback 100, 110, 99: two returns, their mean square scaled to 3 bars
    hist = V.historical_vol(np.array([[100.0, 110.0, 99.0]]), horizon=3)
    assert hist[0] == pytest.approx(math.sqrt(3 * (a**2 + b**2) / 2), rel=1e-12)
    # a close that is not positive has no log return: that origin has no value
    assert np.isnan(V.realised_vol(np.array([100.0]), np.array([[110.0, 0.0, 99.0]])))[0]
    assert np.isnan(V.path_vol(np.array([100.0]), -paths))[0]


def test_mae_and_r2_on_known_cases():
    got = V.vol_scores(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    # errors 0, -1, 1: MAE 2/3; SSE 2, SST around the mean 2 is 1 + 1 + 0 = 2: R^2 0
    assert got["mae"] == pytest.approx(2 / 3) and got["r2"] == pytest.approx(0.0)
    assert got["pairs"] == 3 and got["mean_forecast"] == pytest.approx(2.0)
    worse = V.vol_scores(np.array([3.0, 1.0, 1.0]), np.array([1.0, 3.0, 2.0]))
    assert worse["r2"] == pytest.approx(1 - (4 + 4 + 1) / 2)  # -3.5: worse than the mean
    perfect = V.vol_scores(np.array([0.1, 0.3]), np.array([0.1, 0.3]))
    assert perfect["mae"] == 0.0 and perfect["r2"] == 1.0
    assert math.isnan(V.vol_scores(np.ones(3), np.full(3, 2.0))["r2"])  # no variance


class Oracle:
    """A sampled model whose every path is the actual future bars (looked up in the store)."""

    def __init__(self, store) -> None:
        self.store = store
        self.row = {
            (int(t), v.tobytes()): i for i, (t, v) in enumerate(zip(store.stamps, store.values))
        }

    def forecast_arrays(self, values, x_seconds, y_seconds, pred_len, options) -> Forecast:
        rows = [self.row[(int(t[-1]), v[-1].tobytes())] for v, t in zip(values, x_seconds)]
        paths = np.stack([self.store.values[r + 1 : r + 1 + pred_len] for r in rows])
        samples = np.repeat(paths[:, None], options.sample_count, axis=1)
        return Forecast(samples, paths)


def test_a_model_whose_paths_are_the_actuals_scores_mae_0_and_r2_1(tmp_path):
    store = build_datasets(tiny_cfg(tmp_path, demo_symbols=3)).test.store
    origins = plan_origins(store, 20, 4)
    opts = ForecastOptions(4, 20, SamplingOptions(sample_count=2, seed=0), 16, volatility=True)
    forecasters = {"oracle": Oracle(store), "naive": NaiveForecaster()}
    acc = run_rolling(store, origins, forecasters, opts, progress=False)
    section = V.volatility_section(acc, ["oracle"])
    assert section["pairs"] == len(origins) and section["excluded"] == 0
    oracle, hist = section["forecasts"]["oracle"], section["forecasts"][V.HISTORICAL]
    assert oracle["mae"] == 0.0 and oracle["r2"] == 1.0 and oracle["pairs"] == len(origins)
    assert hist["mae"] > 0 and hist["r2"] < 1
    # the historical forecast is the lookback's, computed directly
    close = store.values[:, 3].astype(np.float64)
    lookback = close[origins.row[:, None] - np.arange(19, -1, -1)]
    table = acc.volatility_table("naive")
    assert np.allclose(table["vol_hist"], V.historical_vol(lookback, 4), rtol=1e-12)
    assert set(section["by_symbol"]) == set(store.symbols)
    assert all(s["oracle"]["mae"] == 0.0 for s in section["by_symbol"].values())


# ------------------------------------------------------------------ evaluate.py


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return tiny_demo_predictor(tmp_path_factory.mktemp("tasks"))


TASKS = ["--volatility", "--sample_count", "2", "--scaling", "2,1", "--scaling_seeds", "2"]
SMALL = ["--max_origins", "8", "--pred_len", "2", "--no_progress"]  # 2 dates x 4 symbols


@pytest.fixture(scope="module")
def tasks_eval(demo_run, tmp_path_factory) -> Path:
    """The tiny run evaluated with both tasks (no plots: `scaling_plot` is tested on its own)."""
    out = tmp_path_factory.mktemp("tasks_eval") / "eval"
    argv = ["--exp_dir", str(demo_run), "--output", str(out), *SMALL, *TASKS, "--no_plots"]
    assert evaluate_main(argv) == 0
    return out


def test_the_scaling_table_on_the_demo_data(tasks_eval):
    out = tasks_eval
    metrics = json.loads((out / "metrics.json").read_text())
    scaling = json.loads((out / "scaling.json").read_text())
    assert scaling["sample_counts"] == [1, 2]
    assert scaling["seeds"] == [0, 1]  # one batch per run
    rows = scaling["summary"]
    assert [(r["model"], r["sample_count"], r["seeds"]) for r in rows] == [
        ("kronos", 1, 2),
        ("kronos", 2, 2),
    ]  # one row per count; the deterministic baselines are left out
    assert rows[0]["crps_mean"] is None and rows[1]["crps_mean"] > 0  # CRPS needs 2 paths
    runs = {(r["sample_count"], r["seed"]): r for r in scaling["runs"]}
    assert runs[(1, 0)]["ic"] != runs[(1, 1)]["ic"]  # the seeds differ
    for metric in ("ic", "rank_ic"):
        values = [runs[(1, s)][metric] for s in (0, 1)]
        assert rows[0][f"{metric}_mean"] == pytest.approx(np.mean(values))
        assert rows[0][f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
    # run 0 at the evaluation's own count repeats the main evaluation's forecasts with the
    # same seeds, in a separate pass: the same numbers (reproducible), scored the same way
    for metric in ("ic", "rank_ic", "crps"):
        assert runs[(2, 0)][metric] == pytest.approx(metrics["kronos"][metric], rel=1e-12)
    report = (out / "report.md").read_text()
    assert "## Test-time scaling" in report and "| kronos | 2 |" in report
    assert not (out / "scaling.png").exists()  # --no_plots


def test_the_scaling_plot_is_a_png(tasks_eval, tmp_path):
    summary = json.loads((tasks_eval / "scaling.json").read_text())["summary"]
    summary = [{k: math.nan if v is None else v for k, v in row.items()} for row in summary]
    assert scaling_plot(tmp_path, summary, SCALING_PLOT) == SCALING_PLOT
    assert (tmp_path / SCALING_PLOT).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_volatility_on_the_demo_data(tasks_eval):
    metrics = json.loads((tasks_eval / "metrics.json").read_text())
    vol = json.loads((tasks_eval / "volatility.json").read_text())
    assert list(vol["forecasts"]) == ["kronos", V.HISTORICAL]
    assert vol["pairs"] + vol["excluded"] == int(metrics["kronos"]["origins"])
    assert all(f["pairs"] == vol["pairs"] and f["mae"] >= 0 for f in vol["forecasts"].values())
    assert len(vol["by_symbol"]) == 4  # per symbol too
    report = (tasks_eval / "report.md").read_text()
    assert "## Realised volatility over the horizon" in report and "| historical |" in report


def test_scaling_runs_share_no_batch_seed():
    # run i starts at seed + i * batches; batch b of it samples with that + b
    assert run_seeds(SamplingOptions(seed=5), 3, 4) == [5, 9, 13]
    assert run_seeds(SamplingOptions(seed=5), 2, 0) == [5, 6]
    assert run_seeds(SamplingOptions(seed=2**63 - 2), 2, 4) == [2**63 - 2, 2]  # wraps


def test_volatility_of_the_baselines_alone_needs_no_samples(demo_run, tmp_path):
    out = tmp_path / "eval"
    argv = ["--exp_dir", str(demo_run), "--output", str(out), "--no_model", "--no_plots"]
    assert evaluate_main([*argv, *SMALL, "--volatility"]) == 0
    vol = json.loads((out / "volatility.json").read_text())
    assert list(vol["forecasts"]) == [V.HISTORICAL] and vol["pairs"] > 0
    assert not (out / "scaling.json").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--scaling", "1,x"], "--scaling: '1,x' is not a comma-separated list"),
        (["--scaling", "0,5"], "--scaling: '0,5' is not a comma-separated list"),
        (["--scaling", ""], "--scaling: '' is not a comma-separated list"),
        (["--scaling", "5,1,5"], "--scaling: [5] listed more than once"),
        (["--scaling", "1,5", "--scaling_seeds", "0"], "--scaling_seeds: must be a positive"),
        (["--scaling_seeds", "2"], "--scaling_seeds: only with --scaling"),
        (["--scaling", "1,2", "--no_model"], "--scaling: needs a sampled model"),
        (["--volatility"], "--volatility: needs --sample_count >= 2, got 1"),
    ],
)
def test_bad_task_flags_are_one_line_and_touch_nothing(demo_run, tmp_path, capsys, extra, needle):
    before = snapshot(demo_run)
    argv = ["--exp_dir", str(demo_run), "--output", str(tmp_path / "eval"), "--no_progress"]
    assert evaluate_main([*argv, *extra]) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    _assert_untouched(before, snapshot(demo_run))
    assert not (tmp_path / "eval").exists()
