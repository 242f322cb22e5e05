"""Issue 22: every script's `--help` shows its defaults (before a long run is started with
them), the training run says its size and time, and the forecasting commands accept the
public `device_id` habit `--device cuda:N` (one line on a machine without that device)."""

from __future__ import annotations

import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import run, tiny_cfg

from kronos_engine.cli import backtest, evaluate, predict
from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))

# A few defaults each script's --help must show (whitespace-normalised).
EXPECTED = {
    "train.py": ["(default: auto)", "--lookback_window N history rows a window shows the "
                 "model (default: 90)", "(default: 512)"],
    "pipeline.py": ["--epochs N passes of train_samples_per_epoch windows (default: 3)"],
    "evaluate.py": ["--stride STRIDE rows between origins of a symbol (default: 1)",
                    "origins forecast together (default: 64)", "(default: naive,drift)"],
    "predict.py": ["symbols forecast together (default: 32)", "threshold (default: 0.9)",
                   "--top_k TOP_K top-k sampling (1 = greedy) (default: 0)"],
    "backtest.py": ["--topk TOPK instruments held (default: 50)"],
    "sweep.py": ["each in its own process (default 1)"],
    "download.py": ["(default: 15.0)"],
    "plot.py": ["(default: OUTPUT_DIR/loss.png"],
    "benchmark_data.py": ["--symbols SYMBOLS default: 50"],
    "benchmark_evaluate.py": ["--lookback LOOKBACK default: 64"],
    "benchmark_forecast.py": ["--max_context MAX_CONTEXT default: 512"],
    "benchmark_train.py": ["--seq_len SEQ_LEN default: 128"],
}  # fmt: skip


def test_every_script_is_listed():
    assert sorted(EXPECTED) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_the_defaults(script, capsys, monkeypatch):
    """Each script as `python scripts/<script> --help` runs it (in this process: fast)."""
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    assert done.value.code in (0, None)
    text = " ".join(capsys.readouterr().out.split())
    for needle in EXPECTED[script]:
        assert needle in text, needle


@pytest.mark.parametrize("module", [predict, evaluate, backtest])
def test_every_flag_with_a_default_shows_it(module):
    parser = module.build_parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default in (None, False, [], "==SUPPRESS=="):
            continue
        if "default" in (action.help or ""):
            continue
        assert f"default: {default}" in text, action.option_strings


def test_a_run_says_its_size_and_then_its_time(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kronos_engine")
    run(tiny_cfg(tmp_path, max_steps=8))  # 2 epochs x 6 steps, cut to 8
    lines = [r.getMessage() for r in caplog.records]
    (size,) = [line for line in lines if " steps (" in line and "writing to" in line]
    assert size.startswith("tokenizer: 8 steps (max_steps; 2 epochs x 6 steps would be 12)")
    (time_line,) = [line for line in lines if "per step (the first 5 steps)" in line]
    assert time_line.startswith("about ") and "the run needs about" in time_line
    assert "(3 steps;" in time_line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("main", [predict_main, evaluate_main])
def test_cuda_n_is_a_device_this_machine_lacks(tmp_path, capsys, main):
    code = main(["--exp_dir", str(tmp_path), "--device", "cuda:1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "--device: 'cuda:1' was requested but this machine has no CUDA device" in err[0]
    assert "not a device" not in err[0]
