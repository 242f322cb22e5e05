"""Traps a new user hit (issue 11): each one is now either the right thing or one clear line.

The `next:` line continues the same experiment, hints print the flags as typed, the example
CSV config fails on missing checkpoints before any data work, resuming needs no PYTHONPATH and
keeps a finished run's summary, prints and logs stay above the progress bar, the Python API
logs and reports its result, and pyqlib is an extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faultinject as fi
import pytest
import tomllib
from test_faults_bad_input import BASE, EXIT_USAGE, _csv

from kronos_engine.cli.train import main

REPO = Path(__file__).resolve().parents[1]
SMALL = [a for a in BASE if not a.startswith("--demo_")]


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _next_command(stdout: str) -> list[str]:
    (line,) = [line for line in stdout.splitlines() if line.startswith("next: ")]
    words = line[len("next: python scripts/train.py ") :].split()
    args, i = [], 0
    while i < len(words):  # "--config PATH" -> "--config=PATH"
        if words[i] == "--config":
            args.append(f"--config={words[i + 1]}")
            i += 2
        else:
            args.append(words[i])
            i += 1
    return args


def test_the_next_line_continues_the_same_experiment(tmp_path, capsys):
    """The suggested predictor command keeps the tokenizer run's config (here: its CSV data),
    not the demo data, and trains as printed."""
    data = tmp_path / "klines"
    data.mkdir()
    for name in ("AAA", "BBB"):
        _csv(data, name)
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"data_source: csv\ndata_path: {data}\nexp_dir: {tmp_path / 'exp'}\nmax_steps: 2\n"
    )
    code = main([*SMALL, "--train_type=tokenizer", f"--config={config}"])
    out = capsys.readouterr().out
    assert code == 0, out
    args = _next_command(out)
    tok = tmp_path / "exp" / "tokenizer"
    assert f"--config={tok / 'config.yaml'}" in args and "--model_preset=tiny" in args
    assert main(args) == 0, capsys.readouterr().err
    written = json.loads(json.dumps(_yaml(tmp_path / "exp" / "predictor" / "config.yaml")))
    assert written["data_source"] == "csv" and written["data_path"] == str(data)
    assert written["tokenizer_path"] == str(tok / "best")


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_bits_mismatch_names_the_preset_that_matches(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default exp_dir is relative: never the clone's outputs/
    tok = fi.make_tokenizer(tmp_path / "tok")
    code = main(
        [*BASE, "--train_type=predictor", "--model_preset=small", f"--tokenizer_path={tok}"]
    )
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert "use a predictor with the tokenizer's bits: --model_preset=tiny" in line, line


def test_hints_print_the_flags_as_typed(tmp_path_factory, tmp_path, capsys):
    import shutil

    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    main([*BASE, "--train_type=tokenizer", f"--output_dir={run}"])
    line = _one_error_line(capsys)
    assert f"continue it with --resume={run}," in line and "--overwrite=true" in line, line


def test_the_csv_example_without_checkpoints_fails_before_any_data_work(tmp_path):
    """configs/finetune_csv.yaml with only data_path edited, models/ not downloaded: one line
    naming pretrained_tokenizer and the folder, before the data are read or cached. With
    huggingface_hub installed (the dev extras bring it) the path also reads as a Hub id: it is
    fetched at once, and offline that fails in the same place, naming the key."""
    data = tmp_path / "klines"
    data.mkdir()
    _csv(data, "AAA")
    text = (REPO / "configs" / "finetune_csv.yaml").read_text()
    config = tmp_path / "finetune_csv.yaml"
    config.write_text(text.replace("data_path: data/klines", f"data_path: {data}"))
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # never the network, hub client or not
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--train_type=tokenizer",
         f"--config={config}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    if importlib.util.find_spec("huggingface_hub") is None:
        expected = f"error: pretrained_tokenizer: no model folder at '{tmp_path / 'models' / 'Kronos-Tokenizer-base'}'"
    else:
        expected = (
            "error: pretrained_tokenizer: 'models/Kronos-Tokenizer-base' is not a local directory"
        )
    assert errors[0].startswith(expected), errors[0]
    assert not (tmp_path / "outputs").exists()  # no cache, no output dir


CALLBACK = textwrap.dedent(
    """
    from kronos_engine import TrainCallback


    class PrintLoss(TrainCallback):
        def on_step_end(self, ctx):
            if ctx.is_main:
                print(f"step {ctx.global_step}: loss {ctx.last_loss:.4f}")
    """
)


def _run_in(
    cwd: Path, args: list[str], merge: bool = False, pythonpath: str = ""
) -> subprocess.CompletedProcess:
    env = fi.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), pythonpath]))  # no cwd
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=not merge,
        stdout=subprocess.PIPE if merge else None,
        stderr=subprocess.STDOUT if merge else None,
        text=True,
        timeout=300,
    )


def test_resume_with_user_callbacks_needs_no_pythonpath_and_keeps_the_summary(tmp_path):
    (tmp_path / "my_callbacks.py").write_text(CALLBACK)
    out = tmp_path / "run"
    args = [*BASE, "--train_type=tokenizer", f"--output_dir={out}", "--max_steps=3"]
    first = _run_in(tmp_path, [*args, "--callbacks=my_callbacks:PrintLoss"])
    assert first.returncode == 0, first.stderr
    assert "step 3: loss" in first.stdout
    summary = (out / "summary.json").read_bytes()
    assert json.loads(summary)["stop_reason"] == "max_steps"
    again = _run_in(tmp_path, [f"--config={out / 'config.yaml'}", f"--resume={out}"])
    assert again.returncode == 0, again.stderr
    assert "max_steps" in again.stdout  # "finished at step 3 (epoch 0, max_steps)"
    assert (out / "summary.json").read_bytes() == summary


def test_prints_and_logs_stay_above_the_progress_bar(tmp_path):
    (tmp_path / "my_callbacks.py").write_text(CALLBACK)
    out = tmp_path / "run"
    args = [*BASE, "--train_type=tokenizer", f"--output_dir={out}", "--max_steps=4"]
    args = [a for a in args if a != "--progress_bar=false"] + ["--progress_bar=true"]
    result = _run_in(
        tmp_path,
        [*args, "--callbacks=my_callbacks:PrintLoss"],
        merge=True,
        pythonpath=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout
    segments = result.stdout.replace("\r", "\n").split("\n")
    hits = [s for s in segments if "step 1: loss" in s or "step 4: loss" in s]
    assert len(hits) == 2, result.stdout
    assert all(s.startswith("step ") for s in hits), hits  # never glued to the bar's text


def test_the_python_api_logs_and_reports_its_result(tmp_path):
    code = textwrap.dedent(
        f"""
        from kronos_engine import TrainConfig, TrainContextBuilder, Trainer

        cfg = TrainConfig(train_type="tokenizer", output_dir={str(tmp_path / "api")!r},
                          demo_symbols=2, demo_length=200, lookback_window=20, predict_window=4,
                          batch_size=4, train_samples_per_epoch=8, val_samples=4, epochs=1,
                          progress_bar=False, device="cpu")
        Trainer(TrainContextBuilder(cfg).build()).fit()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=fi.env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "INFO kronos_engine: tokenizer: 2 steps" in result.stderr, result.stderr
    assert f"tokenizer training finished at step 2 (epoch 1); results in {tmp_path / 'api'}" in (
        result.stderr
    )


def test_the_missing_column_error_lists_only_the_files_columns(tmp_path):
    from kronos_engine.config import TrainConfig
    from kronos_engine.data import load_frames
    from kronos_engine.errors import DataError

    path = _csv(tmp_path, "novol", lambda f: f.drop(columns=["volume"]))
    cfg = TrainConfig(data_source="csv", data_path=str(path), lookback_window=10, predict_window=2)
    with pytest.raises(DataError) as err:
        load_frames(cfg)
    assert "missing column(s) volume" in str(err.value) and "_row" not in str(err.value)


def test_pyqlib_is_an_extra_kept_in_dev():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pyqlib") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("pyqlib") for d in extras["qlib"])
    assert any(d.startswith("pyqlib") for d in extras["dev"])


def test_a_qlib_config_without_pyqlib_is_one_line(tmp_path, capsys, monkeypatch):
    """`sys.modules['qlib'] = None` is how Python marks a module as not importable."""
    monkeypatch.setitem(sys.modules, "qlib", None)
    out = tmp_path / "out"
    code = main(
        [*BASE, "--train_type=tokenizer", "--data_source=qlib", f"--data_path={tmp_path}",
         f"--output_dir={out}"]
    )  # fmt: skip
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert line == (
        "error: data_source: 'qlib' needs pyqlib, which is not installed; install the Qlib "
        "extra with pip install -e '.[qlib]' (or pip install pyqlib)"
    )
    assert not out.exists()
