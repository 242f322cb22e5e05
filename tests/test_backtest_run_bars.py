"""`scripts/backtest.py` without `--provider` on a run that read no Qlib provider: the run's
own bars (read as its data build read them) are written as a temporary Qlib provider, traded,
and the folder is removed, also when the backtest fails."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import pytest
from engine_helpers import only_error_line, run, save_random_tokenizer, tiny_cfg
from round3_helpers import finished_csv_run
from test_faults_bad_input import _assert_untouched, snapshot

from kronos_engine.cli.backtest import main as backtest_main
from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.data import generate_demo_frames, write_qlib_provider

pytest.importorskip("qlib")

SYMBOLS, LENGTH, SEED = 8, 300, 7
TRADE = ["--topk", "3", "--n_drop", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A tiny predictor fine-tuned for 2 steps on 8 demo symbols, evaluated by evaluate.py."""
    root = tmp_path_factory.mktemp("bt_demo")
    cfg = tiny_cfg(
        root,
        train_type="predictor",
        demo_symbols=SYMBOLS,
        demo_length=LENGTH,
        seed=SEED,
        tokenizer_path=str(save_random_tokenizer(root / "tok")),
        max_steps=2,
        epochs=1,
    )
    run(cfg)
    exp = Path(cfg.exp_dir)
    assert evaluate_main(["--exp_dir", str(exp), "--no_plots", "--no_progress"]) == 0
    return exp


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """Where `tempfile` makes folders during the test (so what is left there can be seen)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_demo_run_is_backtested_on_its_own_bars(demo_run, tmp_path, temp_root, caplog):
    out = tmp_path / "own"
    with caplog.at_level(logging.INFO, logger="kronos_engine"):
        assert backtest_main(["--exp_dir", str(demo_run), *TRADE, "--output", str(out)]) == 0
    line = next(r.getMessage() for r in caplog.records if "backtest bars" in r.getMessage())
    assert f"demo data ({SYMBOLS} symbols x {LENGTH} bars, seed {SEED})" in line
    assert str(temp_root) in line  # the temporary provider, gone now
    assert list(temp_root.iterdir()) == []
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "kronos" and report["settings"]["instruments"] == SYMBOLS
    for key in ("information_ratio", "max_drawdown", "turnover"):
        assert isinstance(report[key], float) and math.isfinite(report[key]), key
    assert 0 < report["turnover"] <= 1
    # The same backtest on a provider written explicitly from the run's bars: the same report.
    frames = generate_demo_frames(SYMBOLS, LENGTH, "day", SEED)
    provider = write_qlib_provider(frames, tmp_path / "provider", "day")
    again = tmp_path / "explicit"
    argv = ["--exp_dir", str(demo_run), *TRADE, "--provider", str(provider), "--output", str(again)]
    assert backtest_main(argv) == 0
    assert json.loads((again / "report.json").read_text()) == report
    assert (again / "report.csv").read_bytes() == (out / "report.csv").read_bytes()


def test_the_temporary_provider_is_removed_when_the_backtest_fails(
    demo_run, tmp_path, temp_root, capsys, caplog
):
    out = tmp_path / "bt"
    before = snapshot(demo_run)
    argv = ["--exp_dir", str(demo_run), *TRADE, "--benchmark", "NOPE", "--output", str(out)]
    assert backtest_main(argv) == 2
    line = only_error_line(capsys)
    assert "--benchmark" in line and "'NOPE'" in line and "demo data" in line, line
    assert str(temp_root) not in line  # named by its bars, not by a folder that is gone
    assert list(temp_root.iterdir()) == [] and not out.exists()
    # A signal that cannot fill --topk is refused before the run's bars are read at all.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kronos_engine"):
        assert backtest_main(["--exp_dir", str(demo_run), "--output", str(out)]) == 2
    assert "--topk" in only_error_line(capsys)
    assert not any("backtest bars" in r.getMessage() for r in caplog.records)
    assert list(temp_root.iterdir()) == [] and not out.exists()
    _assert_untouched(before, snapshot(demo_run))


def test_an_intraday_csv_run_is_refused_in_one_line(tmp_path, temp_root, capsys):
    finished_csv_run(tmp_path, symbols=2, length=200, freq="5min", max_steps=1)
    before = snapshot(tmp_path)
    assert backtest_main(["--exp_dir", str(tmp_path / "exp")]) == 2
    line = only_error_line(capsys)
    assert line.startswith("error: freq:") and "5min" in line and "freq day" in line, line
    assert str(tmp_path / "klines") in line
    _assert_untouched(before, snapshot(tmp_path))  # no backtest/, no temporary folder
