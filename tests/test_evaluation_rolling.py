"""Rolling-origin evaluation: leak-free origins, baselines, and `scripts/evaluate.py` end to end
on a CSV fine-tune, with `metrics.json` recomputed from `forecasts.parquet`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import run, save_random_tokenizer, tiny_cfg

from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.data import build_datasets, generate_demo_frames
from kronos_engine.evaluation import metrics as M
from kronos_engine.evaluation.baselines import DriftForecaster, NaiveForecaster
from kronos_engine.evaluation.origins import plan_origins, subset_by_date
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling

LOOKBACK, PRED = 20, 4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> dict:
    """A tiny predictor fine-tuned for 2 steps on 3 symbols of CSV files (ratio splits)."""
    root = tmp_path_factory.mktemp("csv_run")
    data = root / "klines"
    data.mkdir()
    frames = generate_demo_frames(3, 240, "day", seed=5)
    for symbol, frame in frames.items():
        frame.to_csv(data / f"{symbol}.csv", index=False)
    tokenizer = save_random_tokenizer(root / "tok")
    cfg = tiny_cfg(
        root,
        train_type="predictor",
        data_source="csv",
        data_path=str(data),
        tokenizer_path=str(tokenizer),
        lookback_window=LOOKBACK,
        predict_window=PRED,
        max_steps=2,
        epochs=1,
    )
    run(cfg)
    return {"exp": Path(cfg.exp_dir), "data": data, "frames": frames, "cfg": cfg}


class RecordingForecaster(NaiveForecaster):
    """The naive forecast, remembering every history and target stamps it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[pd.Series, pd.DatetimeIndex, np.ndarray]] = []

    def predict_batch(self, df_list, x_timestamp_list=None, y_timestamp_list=None, *a, **k):
        for df, x, y in zip(df_list, x_timestamp_list, y_timestamp_list):
            self.seen.append((pd.Series(x), pd.DatetimeIndex(y), df["close"].to_numpy()))
        return super().predict_batch(df_list, x_timestamp_list, y_timestamp_list, *a, **k)


def test_origins_are_leak_free_and_cover_the_split(csv_run):
    cfg = csv_run["cfg"]
    store = build_datasets(cfg).test.store
    origins = plan_origins(store, LOOKBACK, PRED, stride=3)
    recorder = RecordingForecaster()
    opts = ForecastOptions(pred_len=PRED, lookback=LOOKBACK, batch_size=5)
    run_rolling(store, origins, {"naive": recorder}, opts, progress=False)
    assert len(recorder.seen) == len(origins)
    for s, symbol in enumerate(store.symbols):
        frame = csv_run["frames"][symbol].reset_index(drop=True)
        stamps = pd.DatetimeIndex(frame["timestamps"])
        n = len(frame)
        first_test = int(round(n * 0.9))  # the ratio split's first test row
        mine = [seen for o, seen in zip(origins.symbol, recorder.seen) if o == s]
        # The first origin is the last row before the test split; origins step by 3 rows.
        first_x, first_y, _ = mine[0]
        assert first_x.iloc[-1] == stamps[first_test - 1]
        assert first_y[0] == stamps[first_test]
        for x, y, close in mine:
            origin = int(stamps.get_loc(x.iloc[-1]))
            assert len(x) == LOOKBACK and list(x) == list(
                stamps[origin - LOOKBACK + 1 : origin + 1]
            )
            assert list(y) == list(stamps[origin + 1 : origin + 1 + PRED])  # the data's own
            assert y[0] >= stamps[first_test] and y[-1] <= stamps[-1]
            np.testing.assert_allclose(
                close, frame["close"].to_numpy()[origin - LOOKBACK + 1 : origin + 1], rtol=1e-6
            )
        assert len(mine) == len(range(first_test - 1, n - PRED, 3))


def test_baselines_by_hand():
    history = pd.DataFrame(
        {c: [10.0, 12.0, 14.0] for c in ("open", "high", "low", "close", "volume", "amount")}
    )
    stamps = pd.Series(pd.date_range("2024-01-01", periods=3))
    future = pd.date_range("2024-01-04", periods=2)
    naive = NaiveForecaster().predict_batch([history], [stamps], [future], 2)[0]
    drift = DriftForecaster().predict_batch([history], [stamps], [future], 2)[0]
    assert naive["close"].tolist() == [14.0, 14.0]
    assert drift["close"].tolist() == [16.0, 18.0]
    assert list(drift.index) == list(future)


def test_the_naive_forecast_scores_skill_zero(csv_run):
    store = build_datasets(csv_run["cfg"]).test.store
    origins = plan_origins(store, LOOKBACK, PRED)
    opts = ForecastOptions(pred_len=PRED, lookback=LOOKBACK)
    acc = run_rolling(store, origins, {"naive": NaiveForecaster()}, opts, progress=False)
    assert acc.overall()["naive"]["skill"] == 0.0


def test_subset_by_date_keeps_whole_dates_and_the_budget(csv_run):
    store = build_datasets(csv_run["cfg"]).test.store
    origins = plan_origins(store, LOOKBACK, PRED)
    subset = subset_by_date(store, origins, 7)
    assert 0 < len(subset) <= 7
    dates = pd.Series(store.stamps[subset.row]).value_counts()
    assert (dates == 3).sum() >= 2  # every symbol of a chosen date, so IC is defined
    assert np.array_equal(subset.row, subset_by_date(store, origins, 7).row)


@pytest.fixture(scope="module")
def evaluated(csv_run) -> Path:
    exp = csv_run["exp"]
    best = exp / "predictor" / "best"  # the same model again, as a --compare folder
    args = ["--exp_dir", str(exp), "--sample_count", "4", "--stride", "2", "--no_progress"]
    code = evaluate_main([*args, "--compare", f"again={best}"])
    assert code == 0
    return exp / "eval"


def test_evaluate_writes_every_output_on_a_csv_finetune(evaluated):
    names = {p.name for p in evaluated.iterdir()}
    assert {"metrics.json", "metrics_by_symbol.csv", "forecasts.parquet", "report.md"} <= names
    assert {"forecast_vs_actual.png", "ic_by_date.png", "calibration.png"} <= names
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert list(metrics) == ["kronos", "again", "naive", "drift"]
    # A --compare folder is read with the run's tokenizer and forecast on the same origins
    # with the same seeds: the same model gives the same numbers.
    assert metrics["again"] == metrics["kronos"]
    for values in metrics.values():
        assert {"mae", "rmse", "mase", "skill", "direction_accuracy", "crps"} <= set(values)
        assert {"coverage_80", "coverage_90"} <= set(values)
    assert {"ic", "rank_ic"} <= set(metrics["kronos"])
    assert metrics["naive"]["skill"] == 0.0
    by_symbol = pd.read_csv(evaluated / "metrics_by_symbol.csv")
    assert len(by_symbol) == 12 and set(by_symbol.model) == {"kronos", "again", "naive", "drift"}
    report = (evaluated / "report.md").read_text()
    assert "| kronos |" in report and "**" in report


def test_metrics_json_agrees_with_forecasts_parquet(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    f = pd.read_parquet(evaluated / "forecasts.parquet")
    assert {"model", "symbol", "origin", "timestamp", "horizon", "close_pred", "close_true"} <= set(
        f.columns
    )
    assert {"close_q10", "close_q90", "close_q5", "close_q95"} <= set(f.columns)
    naive_mae = (f[f.model == "naive"].close_pred - f[f.model == "naive"].close_true).abs().mean()
    for model, rows in f.groupby("model"):
        err = rows.close_pred - rows.close_true
        got = metrics[model]
        assert got["mae"] == pytest.approx(err.abs().mean(), rel=1e-9)
        assert got["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-9)
        assert got["mape"] == pytest.approx((err.abs() / rows.close_true.abs()).mean(), rel=1e-9)
        assert got["mase"] == pytest.approx((err.abs() / rows.mase_scale).mean(), rel=1e-9)
        assert got["skill"] == pytest.approx(1 - err.abs().mean() / naive_mae, abs=1e-12)
        assert got["crps"] == pytest.approx(rows.crps.mean(), rel=1e-9)
        inside80 = (rows.close_true >= rows.close_q10) & (rows.close_true <= rows.close_q90)
        inside90 = (rows.close_true >= rows.close_q5) & (rows.close_true <= rows.close_q95)
        assert got["coverage_80"] == pytest.approx(inside80.mean())
        assert got["coverage_90"] == pytest.approx(inside90.mean())
        last = rows[rows.horizon == rows.horizon.max()]
        pred_ret = last.close_pred / last.close_origin - 1
        true_ret = last.close_true / last.close_origin - 1
        assert got["direction_accuracy"] == pytest.approx(
            (np.sign(pred_ret) == np.sign(true_ret)).mean()
        )
        assert got["origins"] == len(last)
        if model == "naive":
            assert "ic" not in got  # a constant predicted return has no IC
            continue
        table = pd.DataFrame({"date": last.origin, "p": pred_ret, "t": true_ret})
        daily = [g.p.corr(g.t) for _, g in table.groupby("date") if g.p.std() > 0]
        ranked = [g.p.corr(g.t, method="spearman") for _, g in table.groupby("date")]
        assert got["ic"] == pytest.approx(np.nanmean(daily), rel=1e-9)
        assert got["rank_ic"] == pytest.approx(np.nanmean(ranked), rel=1e-9)


def test_bad_arguments_fail_in_one_line_and_keep_the_earlier_eval(
    csv_run, evaluated, tmp_path, capsys
):
    before = (evaluated / "metrics.json").read_bytes()
    code = evaluate_main(["--exp_dir", str(csv_run["exp"]), "--compare", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--compare" in err[0] and str(tmp_path) in err[0]
    assert (evaluated / "metrics.json").read_bytes() == before
    code = evaluate_main(["--exp_dir", str(csv_run["exp"]), "--pred_len", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: --pred_len: must be a positive integer, got 0"]
    assert (evaluated / "metrics.json").read_bytes() == before


def test_crps_rows_match_the_samples_definition():
    """A point forecast repeated as samples has CRPS = |error| (the baselines' case)."""
    y = np.array([[1.0, 2.0]])
    samples = np.repeat(np.array([[3.0, 1.5]])[..., None], 5, axis=-1)
    np.testing.assert_allclose(M.crps_ensemble(samples, y), [[2.0, 0.5]])


@pytest.mark.slow
def test_evaluate_on_the_quick_start_outputs(tmp_path):
    """The README's Quick start commands, then `scripts/evaluate.py --exp_dir outputs/demo`
    alone, as a new user runs them (several minutes on 2 CPU cores)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "scripts" / name), *args]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    for stage in ("tokenizer", "predictor"):
        proc = script("train.py", f"--train_type={stage}", "--progress_bar=false")
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = script("evaluate.py", "--exp_dir", "outputs/demo", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "outputs/demo/eval/metrics.json").read_text())
    assert list(metrics) == ["kronos", "naive", "drift"]
    assert {"mae", "rmse", "mase", "skill", "direction_accuracy", "ic", "rank_ic"} <= set(
        metrics["kronos"]
    )
    assert "| kronos |" in proc.stdout
