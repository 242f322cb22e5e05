"""`scripts/predict.py` end to end, in real subprocesses, on a tiny demo pipeline's outputs and
on CSV files, including the inputs it must refuse or skip with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_cli import TINY, check_ok, run_cli

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "scripts" / "pipeline.py"
PREDICT = REPO / "scripts" / "predict.py"


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory) -> Path:
    """A finished tiny pipeline (tokenizer then predictor) on the demo data."""
    root = tmp_path_factory.mktemp("predict")
    proc = run_cli(f"--exp_dir={root / 'exp'}", *TINY, "--max_steps=3", cwd=root, script=PIPELINE)
    check_ok(proc)
    return root / "exp"


def predict(*args, cwd: Path):
    return run_cli(*args, cwd=cwd, script=PREDICT)


def write_csv_folder(folder: Path, lengths: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (symbol, n) in enumerate(lengths.items()):
        rng = np.random.default_rng(i)
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        frame = pd.DataFrame(
            {
                "date": pd.date_range("2023-01-02", periods=n, freq="B").strftime("%Y-%m-%d"),
                "open": close,
                "high": close * 1.01,
                "low": close * 0.99,
                "close": close,
                "volume": rng.integers(100, 1000, n),
            }
        )
        frame.to_csv(folder / f"{symbol}.csv", index=False)
    return folder


def test_predict_on_the_pipeline_outputs(exp_dir):
    out = exp_dir / "next.parquet"
    proc = predict(
        f"--exp_dir={exp_dir}", "--sample_count=4", "--quantiles=0.1,0.9", f"--output={out}",
        "--plot", cwd=exp_dir,
    )  # fmt: skip
    check_ok(proc)
    table = pd.read_parquet(out)
    assert table["symbol"].unique().tolist() == ["DEMO000", "DEMO001"]
    assert len(table) == 2 * 5  # the run's predict_window
    assert {"timestamp", "close", "close_q10", "close_q90", "amount_q90"} <= set(table.columns)
    assert np.isfinite(table.drop(columns=["symbol", "timestamp"]).to_numpy()).all()
    # Forecasts start after the last bar of the demo data the run trained on.
    last = pd.Timestamp("2018-01-01") + pd.offsets.BDay(300)
    assert table["timestamp"].min() >= last - pd.offsets.BDay(1)
    assert sorted(p.name for p in (exp_dir / "plots").iterdir()) == ["DEMO000.png", "DEMO001.png"]


def test_predict_on_csv_names_short_symbols_and_keeps_going(exp_dir, tmp_path):
    data = write_csv_folder(tmp_path / "klines", {"AAA": 80, "BBB": 12, "CCC": 45})
    proc = predict(
        f"--exp_dir={exp_dir}", f"--data_path={data}", "--lookback=40", "--pred_len=3",
        "--top_k=1", f"--output={tmp_path / 'f.csv'}", cwd=tmp_path,
    )  # fmt: skip
    check_ok(proc)
    skipped = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "BBB has 12 bars, lookback is 40" in skipped[0]
    table = pd.read_csv(tmp_path / "f.csv", parse_dates=["timestamp"])
    assert table["symbol"].unique().tolist() == ["AAA", "CCC"]
    aaa = table[table["symbol"] == "AAA"]["timestamp"]
    # Weekday bars continue on business days after the last bar.
    last = pd.date_range("2023-01-02", periods=80, freq="B")[-1]
    assert list(aaa) == list(pd.date_range(last, periods=4, freq="B")[1:])


def test_predict_as_of_uses_the_datas_own_future_stamps(exp_dir, tmp_path):
    data = write_csv_folder(tmp_path / "klines", {"AAA": 80})
    stamps = pd.date_range("2023-01-02", periods=80, freq="B")
    proc = predict(
        f"--exp_dir={exp_dir}", f"--data_path={data}", "--lookback=30", "--pred_len=4",
        f"--as_of={stamps[49].date()}", f"--output={tmp_path / 'f.csv'}", cwd=tmp_path,
    )  # fmt: skip
    check_ok(proc)
    table = pd.read_csv(tmp_path / "f.csv", parse_dates=["timestamp"])
    assert list(table["timestamp"]) == list(stamps[50:54])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("bad_row", "row"),
        ("no_run", "no trained predictor"),
        ("quantiles_one_sample", "quantiles need sample_count >= 2"),
        ("bad_suffix", "must end in .csv or .parquet"),
        ("all_short", "no symbol could be forecast"),
    ],
)
def test_predict_bad_input_is_one_line_and_leaves_the_output_alone(
    exp_dir, tmp_path, case, expected
):
    data = write_csv_folder(tmp_path / "klines", {"AAA": 60})
    out = tmp_path / "f.csv"
    out.write_text("previous results\n")
    args = [f"--exp_dir={exp_dir}", f"--data_path={data}", "--lookback=30", f"--output={out}"]
    if case == "bad_row":
        frame = pd.read_csv(data / "AAA.csv").astype({"close": object})
        frame.loc[17, "close"] = "oops"
        frame.to_csv(data / "AAA.csv", index=False)
    elif case == "no_run":
        args[0] = f"--exp_dir={tmp_path}"
    elif case == "quantiles_one_sample":
        args.append("--quantiles=0.1,0.9")
    elif case == "bad_suffix":
        args[-1] = f"--output={tmp_path / 'f.xlsx'}"
    elif case == "all_short":
        args[2] = "--lookback=100"
    proc = predict(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert out.read_text() == "previous results\n"
    if case == "bad_row":
        assert "AAA.csv" in errors[0]
