"""Bad input, third round (issue 19): `scripts/backtest.py` and `scripts/plot.py`.

A backtest reports ratios only of a signal it could trade as asked: an all-NaN forecast, an
account <= 0, negative costs, more instruments asked for than the forecasts have, zero-row or
intraday forecasts and a broken run config are one `error:` line, exit code 2, before Qlib
runs, with every byte unchanged; a partly-NaN signal is traded on its finite values and the
gaps are counted. `plot.py` skips and counts bad `metrics.jsonl` lines like a log reader, and
refuses an output it cannot write as an image in one line. In-process `main([...])` calls.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import evaluated_qlib_experiment
from round3_helpers import one_error, refused

from kronos_engine.cli.backtest import main as backtest_main
from kronos_engine.cli.plot import main as plot_main
from kronos_engine.errors import BacktestError
from kronos_engine.plotting import load_run

_one_error, _refused = one_error, refused


# ------------------------------------------------------------------ backtest


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    """8 demo symbols as a Qlib provider and the baselines' forecasts of its test split."""
    pytest.importorskip("qlib")
    return evaluated_qlib_experiment(tmp_path_factory.mktemp("round3_bp"))


@pytest.fixture
def forecasts(evaluated) -> pd.DataFrame:
    return pd.read_parquet(evaluated["exp"] / "eval" / "forecasts.parquet")


def _args(evaluated: dict, out: Path, *extra: str) -> list[str]:
    exp, provider = evaluated["exp"], evaluated["provider"]
    return ["--exp_dir", str(exp), "--provider", str(provider), "--topk", "3", "--n_drop", "1",
            "--output", str(out), *extra]  # fmt: skip


def _refused_backtest(capsys, evaluated, tmp_path, *extra: str, needles=()) -> str:
    out = tmp_path / "bt"
    roots = [evaluated["exp"].parent, tmp_path]
    line = _refused(capsys, roots, backtest_main, _args(evaluated, out, *extra), *needles)
    assert not out.exists()
    return line


def test_an_all_nan_model_signal_is_refused_naming_the_file_and_model(
    evaluated, forecasts, tmp_path, capsys
):
    file = tmp_path / "nan.parquet"
    forecasts.assign(close_pred=np.nan).to_parquet(file)
    _refused_backtest(
        capsys, evaluated, tmp_path, "--forecasts", str(file),
        needles=(str(file), "'drift'", "no usable signal", "NaN"),
    )  # fmt: skip


def test_a_partly_nan_signal_trades_its_finite_values_and_counts_the_gaps(
    evaluated, forecasts, tmp_path, caplog
):
    origins = sorted(forecasts["origin"].unique())
    gaps = forecasts.copy()
    whole_days = gaps["origin"].isin(origins[10:14])
    gaps.loc[whole_days, "close_pred"] = np.nan
    one = (gaps["origin"] == origins[30]) & (gaps["symbol"] == "DEMO001")
    gaps.loc[one, "close_pred"] = np.inf  # Qlib would rank it first
    gaps.to_parquet(tmp_path / "gaps.parquet")
    forecasts[~(whole_days | one)].to_parquet(tmp_path / "without.parquet")
    reports, warned = {}, {}
    for name in ("gaps", "without"):
        out = tmp_path / f"bt_{name}"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kronos_engine"):
            argv = _args(evaluated, out, "--forecasts", str(tmp_path / f"{name}.parquet"))
            assert backtest_main(argv) == 0
        reports[name] = json.loads((out / "report.json").read_text())
        warned[name] = [r.getMessage() for r in caplog.records if "NaN" in r.getMessage()]
    assert warned["without"] == [] and len(warned["gaps"]) == 1, warned
    horizon_rows = forecasts[(forecasts.model == "drift") & (forecasts.horizon == 5)]
    n_symbols = horizon_rows["symbol"].nunique()
    assert reports["gaps"]["signal"] == {
        "values": len(horizon_rows),
        "values_without_signal": 4 * n_symbols + 1,
        "dates": len(origins),
        "dates_without_signal": 4,
    }
    assert f"4 of {len(origins)} dates have no signal" in warned["gaps"][0]
    # The NaN/inf values are skipped exactly as if the evaluation had not written them.
    for key in ("excess_return_with_cost", "information_ratio", "turnover", "max_drawdown"):
        assert reports["gaps"][key] == reports["without"][key], key


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--account", "-5"], ["--account", "-5", "> 0"]),
        (["--account", "0"], ["--account", "> 0"]),
        (["--account", "nan"], ["--account", "nan"]),
        (["--open_cost", "-0.001"], ["--open_cost", "-0.001", ">= 0"]),
        (["--close_cost", "-1"], ["--close_cost", ">= 0"]),
        (["--min_cost", "-5"], ["--min_cost", ">= 0"]),
        (["--limit_threshold", "-0.1"], ["--limit_threshold", "> 0"]),
        (["--n_drop", "0"], ["--n_drop", ">= 1"]),
        (["--topk", "20"], ["--topk", "20", "8 instruments"]),
        (["--topk", "8"], ["--n_drop", "--topk 8", "has 8"]),
        (["--topk", "5", "--n_drop", "4"], ["--n_drop", "needs 9 instruments", "has 8"]),
    ],
)
def test_backtest_settings_qlib_would_misreport_are_one_line(
    evaluated, tmp_path, capsys, extra, needles
):
    _refused_backtest(capsys, evaluated, tmp_path, *extra, needles=needles)


def test_the_library_checks_the_settings_too(evaluated):
    from kronos_engine.evaluation.backtest import load_signal, run_backtest

    signal, _ = load_signal(evaluated["exp"] / "eval" / "forecasts.parquet", None)
    with pytest.raises(BacktestError, match="--account"):
        run_backtest(signal, evaluated["provider"], topk=3, n_drop=1, account=-1.0)
    with pytest.raises(BacktestError, match="no usable value"):
        run_backtest(signal * np.nan, evaluated["provider"], topk=3, n_drop=1)


def test_zero_row_forecasts_are_one_line(evaluated, forecasts, tmp_path, capsys):
    file = tmp_path / "empty.parquet"
    forecasts.iloc[:0].to_parquet(file)
    _refused_backtest(
        capsys, evaluated, tmp_path, "--forecasts", str(file), needles=(str(file), "0 rows")
    )


def test_intraday_forecasts_on_a_daily_provider_are_one_line(
    evaluated, forecasts, tmp_path, capsys
):
    origins = sorted(forecasts["origin"].unique())
    day = pd.Timestamp(origins[0])
    bar = {o: day + pd.Timedelta(hours=9, minutes=35 + 5 * i) for i, o in enumerate(origins)}
    file = tmp_path / "intraday.parquet"
    forecasts.assign(origin=forecasts["origin"].map(bar)).to_parquet(file)
    _refused_backtest(
        capsys, evaluated, tmp_path, "--forecasts", str(file),
        needles=("intraday", "5min", str(evaluated["provider"]), "daily calendar"),
    )  # fmt: skip


BROKEN_CONFIGS = {
    "data_source: qlib\ndata_path: [1, 2\n": ["config.yaml", "unreadable run config"],
    "- just\n- a list\n": ["config.yaml", "mapping"],
    "data_source: qlib\ndata_path: [1, 2]\n": ["config.yaml", "data_path", "[1, 2]", "--provider"],
    "data_source: qlib\nqlib_region: {a: 1}\n": ["config.yaml", "qlib_region", "--region"],
}


def test_a_broken_run_config_is_one_line(evaluated, tmp_path, capsys):
    """Garbage YAML, no mapping, and a data_path of the wrong type (a TypeError in pathlib
    before) in the experiment's predictor/config.yaml, read when --provider is not given."""
    exp = tmp_path / "exp"
    shutil.copytree(evaluated["exp"] / "eval", exp / "eval")
    (exp / "predictor").mkdir()
    out = tmp_path / "bt"
    argv = ["--exp_dir", str(exp), "--topk", "3", "--n_drop", "1", "--output", str(out)]
    for text, needles in BROKEN_CONFIGS.items():
        (exp / "predictor" / "config.yaml").write_text(text)
        _refused(capsys, [tmp_path], backtest_main, argv, *needles)
        assert not out.exists()


# ------------------------------------------------------------------ plot


def _metrics(folder: Path, extra: list[bytes]) -> Path:
    """A run folder whose metrics.jsonl has 5 good train records, then the `extra` lines."""
    folder.mkdir(parents=True, exist_ok=True)
    good = [
        json.dumps({"type": "train", "step": s, "epoch": 0, "loss": 3 - 0.1 * s, "lr": 1e-4})
        for s in range(1, 6)
    ]
    (folder / "metrics.jsonl").write_bytes(b"\n".join([g.encode() for g in good] + extra) + b"\n")
    return folder


BAD_LINES = [
    b'{"type": "train", "step": "x", "loss": 1.0}',
    b'{"type": "train", "step": null, "loss": 1.0}',
    b'{"type": "train", "step": Infinity, "loss": 1.0}',
    b'{"type": "train", "step": 2.5, "loss": 1.0}',
    b'{"type": "train", "loss": 1.0}',
    b"this is not json",
    b'{"type": "train", "step": 9, "note": "\xff\xfe"}',  # not UTF-8
    b"[1, 2, 3]",
]


def test_plot_skips_and_counts_bad_records_in_one_warning(tmp_path, capsys, caplog):
    pytest.importorskip("matplotlib")
    good_val = b'{"type": "val", "step": 5, "epoch": 0, "val_loss": 2.5}'
    run_dir = _metrics(tmp_path / "run", [*BAD_LINES, good_val])
    with caplog.at_level(logging.WARNING, logger="kronos_engine"):
        run = load_run(run_dir)
    assert [s for s, _ in run.train["loss"]] == [1, 2, 3, 4, 5]
    assert run.val["val_loss"] == [(5, 2.5)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"skipped {len(BAD_LINES)} bad record(s)" in warnings[0]
    assert "lines 6, 7, 8, 9, 10 ..." in warnings[0]
    caplog.clear()
    capsys.readouterr()
    assert plot_main([str(run_dir)]) == 0
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "error" not in capsys.readouterr().err


def test_plot_of_a_file_without_one_usable_record_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_bytes(b"\n".join(BAD_LINES) + b"\n")
    _refused(capsys, [tmp_path], plot_main, [str(run_dir)], "metrics.jsonl", "no metric records",
             f"{len(BAD_LINES)} bad")  # fmt: skip


@pytest.mark.parametrize("name", ["out.txt", "out", "figure.png.bak"])
def test_plot_output_that_is_no_image_name_is_one_line(tmp_path, capsys, name):
    pytest.importorskip("matplotlib")
    run_dir = _metrics(tmp_path / "run", [])
    out = tmp_path / name
    _refused(capsys, [tmp_path], plot_main, [str(run_dir), "-o", str(out)],
             "--output", str(out), "not an image format", ".png", ".pdf", ".svg")  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("target", ["/proc/kronos_no_such_folder/x.png", "/proc/x.png"])
def test_plot_output_that_cannot_be_written_is_one_line(tmp_path, capsys, target):
    """A folder that cannot be made or written (/proc refuses even root)."""
    pytest.importorskip("matplotlib")
    run_dir = _metrics(tmp_path / "run", [])
    _refused(capsys, [tmp_path], plot_main, [str(run_dir), "-o", target], "--output", target,
             "cannot be written")  # fmt: skip
    assert not Path(target).exists()


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_plot_into_a_read_only_folder_is_refused_before_drawing(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run_dir = _metrics(tmp_path / "run", [])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = [str(run_dir), "-o", str(locked / "new" / "x.png")]
        _refused(capsys, [tmp_path], plot_main, argv, "--output", "not writable")
    finally:
        locked.chmod(0o755)


def test_a_failed_write_keeps_the_earlier_picture_whole(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    run_dir = _metrics(tmp_path / "run", [])
    out = tmp_path / "pics" / "loss.png"
    assert plot_main([str(run_dir), "-o", str(out)]) == 0

    def disk_full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half a pic")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    _refused(capsys, [tmp_path], plot_main, [str(run_dir), "-o", str(out)], "--output",
             str(out), "No space left")  # fmt: skip
    new_folder = tmp_path / "new" / "deeper" / "x.png"
    _refused(capsys, [tmp_path], plot_main, [str(run_dir), "-o", str(new_folder)], "No space")
    assert not (tmp_path / "new").exists()  # the folders it made are gone again
