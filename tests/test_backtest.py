"""`scripts/backtest.py` through real pyqlib on a provider written by `write_qlib_provider`,
trading the forecasts `scripts/evaluate.py`'s machinery wrote."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from engine_helpers import evaluated_qlib_experiment

from kronos_engine.cli.backtest import main as backtest_main
from kronos_engine.evaluation.backtest import load_signal

pytest.importorskip("qlib")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    """8 demo symbols as a Qlib provider, and drift/naive forecasts of its test split."""
    return evaluated_qlib_experiment(tmp_path_factory.mktemp("backtest"))


def test_backtest_runs_through_qlib_and_writes_the_report(evaluated, capsys):
    exp, provider = evaluated["exp"], evaluated["provider"]
    args = ["--exp_dir", str(exp), "--provider", str(provider), "--topk", "3", "--n_drop", "1"]
    assert backtest_main(args) == 0
    report = json.loads((exp / "backtest" / "report.json").read_text())
    assert report["model"] == "drift"  # the first model that is not the naive baseline
    for key in ("excess_return_without_cost", "excess_return_with_cost"):
        assert {"annualized_return", "information_ratio", "max_drawdown"} <= set(report[key])
    for key in ("information_ratio", "max_drawdown", "turnover"):
        assert isinstance(report[key], float) and np.isfinite(report[key])
    assert report["max_drawdown"] <= 0 and 0 < report["turnover"] <= 1
    assert (exp / "backtest" / "cumulative_return.png").stat().st_size > 0
    daily = pd.read_csv(exp / "backtest" / "report.csv", index_col=0, parse_dates=True)
    # Costs only lower the excess return.
    assert report["excess_return_with_cost"]["mean"] < report["excess_return_without_cost"]["mean"]
    # The equal-weight benchmark is the mean close-to-close return of the instruments.
    closes = pd.DataFrame(
        {s: f.set_index("timestamps")["close"] for s, f in evaluated["frames"].items()}
    )
    expected = closes.pct_change().mean(axis=1).reindex(daily.index)
    np.testing.assert_allclose(daily["bench"].iloc[1:], expected.iloc[1:], atol=2e-6)


def test_signal_is_the_predicted_horizon_return_at_the_origin(evaluated):
    signal, model = load_signal(evaluated["exp"] / "eval" / "forecasts.parquet", "drift")
    f = pd.read_parquet(evaluated["exp"] / "eval" / "forecasts.parquet")
    last = f[(f.model == "drift") & (f.horizon == 5)]
    row = last.iloc[7]
    expected = row.close_pred / row.close_origin - 1
    assert signal.loc[(row.symbol, row.origin)] == pytest.approx(expected)
    assert signal.index.names == ["instrument", "datetime"] and len(signal) == len(last)


def test_an_instrument_benchmark_and_bad_inputs(evaluated, tmp_path, capsys):
    exp, provider = evaluated["exp"], evaluated["provider"]
    out = tmp_path / "bt"
    base = ["--exp_dir", str(exp), "--provider", str(provider), "--topk", "3", "--n_drop", "1"]
    assert backtest_main([*base, "--benchmark", "DEMO000", "--output", str(out)]) == 0
    daily = pd.read_csv(out / "report.csv", index_col=0, parse_dates=True)
    close = evaluated["frames"]["DEMO000"].set_index("timestamps")["close"]
    np.testing.assert_allclose(
        daily["bench"].iloc[1:], close.pct_change().reindex(daily.index).iloc[1:], atol=2e-6
    )
    capsys.readouterr()
    before = (out / "report.json").read_bytes()
    cases = {
        "--benchmark": [*base, "--benchmark", "NOPE", "--output", str(out)],
        "--model": [*base, "--model", "nope", "--output", str(out)],
        "--n_drop": [*base[:-2], "--n_drop", "9", "--output", str(out)],
        "forecasts.parquet": ["--exp_dir", str(tmp_path), "--provider", str(provider)],
    }
    for needle, argv in cases.items():
        assert backtest_main(argv) == 2, needle
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert (out / "report.json").read_bytes() == before
