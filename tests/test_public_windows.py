"""Issue 22: windows longer than `max_context` train, as the public code does (its 5-minute
recipe is lookback 512 + predict 48 with max_context 512: the rotary positions have no fixed
length), with one warning saying what a forecast will see; such a run resumes bit-exactly, and
predict/evaluate work on it when the user does what the warning says.

Scaled down: lookback 20 + predict 4 with max_context 16 (the lookback alone is longer too)."""

from __future__ import annotations

import logging
import warnings

import pandas as pd
import pytest
import torch
from engine_helpers import Recorder, run, save_random_tokenizer, tiny_cfg, weights
from test_engine_checkpoints import Crash, CrashAfterStep, _train_records

from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.config.rules import long_window_note

LONG = dict(lookback_window=20, predict_window=4, max_context=16)


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "exceeds max_context" in r.getMessage()
    ]


def test_the_public_5min_windows_are_a_note_not_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path, lookback_window=512, predict_window=48, max_context=512)
    note = long_window_note(cfg)
    assert note is not None and "560 exceeds max_context 512" in note
    assert "the last 512 bars" in note and "--lookback" not in note  # 512 fits: no flag needed
    assert long_window_note(tiny_cfg(tmp_path, max_context=24)) is None  # 20 + 4 fits


def test_a_long_window_predictor_trains_warns_once_and_resumes_exactly(tmp_path, caplog, capsys):
    tok = save_random_tokenizer(tmp_path / "tok")
    common = dict(
        LONG, train_type="predictor", tokenizer_path=str(tok), batch_size=4, ckpt_interval=1,
        keep_last=20, dropout=0.2, forecast_val_origins=4, val_interval=4, epochs=1,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="kronos_engine")
    straight_rec = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        straight = run(tiny_cfg(tmp_path / "straight", **common), straight_rec)
    # forecast validation reads the last max_context bars, as predict/evaluate will
    assert not [w for w in caught if "longer than max_context" in str(w.message)]
    (note,) = _warnings(caplog)
    assert "lookback_window + predict_window = 24 exceeds max_context 16" in note
    assert "a forecast sees at most the last 16 bars" in note
    assert "--lookback 16" in note
    assert straight.global_step == 12 and "val_mae" in straight.val_metrics

    cfg = tiny_cfg(tmp_path / "crashed", **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(5))
    caplog.clear()
    resumed_rec = Recorder()
    resumed = run(
        tiny_cfg(tmp_path / "crashed", resume=str(cfg.resolved_output_dir), **common), resumed_rec
    )
    assert len(_warnings(caplog)) == 1
    assert resumed.global_step == straight.global_step
    assert resumed_rec.losses == straight_rec.losses[5:]  # bit-identical floats
    ws, wr = weights(straight), weights(resumed)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert _train_records(straight.output_dir) == _train_records(resumed.output_dir)

    # Doing what the warning says: forecast with --lookback 16 (the run's 20 is refused, with
    # the run's max_context 16 as with --max_context 16).
    exp = str(tmp_path / "straight" / "exp")
    assert predict_main(["--exp_dir", exp, "--max_context", "16"]) == 2
    assert predict_main(["--exp_dir", exp]) == 2
    assert "exceeds the run's max_context 16" in capsys.readouterr().err
    out = tmp_path / "own_context.csv"
    assert predict_main(["--exp_dir", exp, "--lookback", "16", "--output", str(out)]) == 0
    out = tmp_path / "forecast.csv"
    code = predict_main(
        ["--exp_dir", exp, "--max_context", "16", "--lookback", "16", "--output", str(out)]
    )
    assert code == 0 and len(pd.read_csv(out)) == 2 * 4  # 2 demo symbols x 4 bars
    assert out.read_bytes() == (tmp_path / "own_context.csv").read_bytes()  # the same context
    wide = tmp_path / "wide.csv"  # (16 bars + 4 forecast slide past 16, not past 512)
    argv = ["--exp_dir", exp, "--max_context", "512", "--lookback", "16", "--output", str(wide)]
    assert predict_main(argv) == 0 and wide.read_bytes() != out.read_bytes()
    code = evaluate_main(
        ["--exp_dir", exp, "--max_context", "16", "--lookback", "16", "--max_origins", "3",
         "--no_plots", "--no_progress", "--output", str(tmp_path / "eval")]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "eval" / "metrics.json").is_file()


def test_max_context_must_still_be_positive(tmp_path):
    from kronos_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="max_context: must be >= 1, got 0"):
        tiny_cfg(tmp_path, max_context=0)
