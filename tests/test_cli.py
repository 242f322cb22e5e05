"""`scripts/train.py` end to end, in real subprocesses, the way users run it.

One tiny tokenizer run (module fixture) is shared by the predictor, override and plot tests; the
bad-config cases run concurrently because each only pays for Python + torch start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"
PLOT = REPO / "scripts" / "plot.py"

# Small enough for ~3 s per run on 2 CPU cores; every key is a real config flag.
TINY = [
    "--model_preset=tiny",
    "--demo_symbols=2",
    "--demo_length=300",
    "--lookback_window=30",
    "--predict_window=5",
    "--batch_size=16",
    "--epochs=1",
    "--log_interval=1",
    "--progress_bar=false",
]
TIMING_FIELDS = {"samples_per_s"}


def _env(pythonpath: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, script: Path = TRAIN, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


# ----------------------------------------------------------------------------- tokenizer run


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict:
    """A finished tiny tokenizer run: YAML sets some keys, flags override two of them."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            # tiny demo run
            model_preset: tiny
            demo_symbols: 2
            demo_length: 300
            lookback_window: 30
            predict_window: 5
            batch_size: 32        # overridden by --batch_size
            epochs: 1
            max_steps: 20         # overridden by --max_steps
            log_interval: 1
            progress_bar: false
            train_time_range: null
            """
        )
    )
    exp_dir = root / "exp"
    proc = run_cli(
        "--train_type=tokenizer",
        f"--config={config}",
        "--batch_size=16",
        "--max_steps=6",
        f"--exp_dir={exp_dir}",
        cwd=root,
    )
    check_ok(proc)
    return {"root": root, "exp_dir": exp_dir, "out": exp_dir / "tokenizer", "proc": proc}


def test_tokenizer_run_reports_where_results_are(exp):
    out = exp["out"]
    stdout = exp["proc"].stdout
    for path in (out, out / "best", out / "metrics.jsonl", out / "summary.json"):
        assert str(path) in stdout
        assert path.exists()
    assert "next: python scripts/train.py --train_type=predictor" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["global_step"] == 6
    assert summary["train_type"] == "tokenizer"
    assert (out / "best" / "config.json").is_file()
    assert (out / "best" / "model.safetensors").is_file()
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_logs_go_to_stderr_and_results_to_stdout(exp):
    assert "INFO" not in exp["proc"].stdout
    assert "INFO kronos_engine" in exp["proc"].stderr


def test_flags_override_yaml_which_overrides_defaults(exp):
    written = yaml.safe_load((exp["out"] / "config.yaml").read_text())
    assert written["batch_size"] == 16  # flag over YAML's 32
    assert written["max_steps"] == 6  # flag over YAML's 20
    assert written["demo_length"] == 300  # YAML over the default 800
    assert written["lookback_window"] == 30
    assert written["seed"] == 100  # default
    assert written["train_type"] == "tokenizer"
    assert written["exp_dir"] == str(exp["exp_dir"])


def test_predictor_trains_on_the_experiments_tokenizer(exp):
    proc = run_cli(
        "--train_type=predictor",
        *TINY,
        "--max_steps=4",
        f"--exp_dir={exp['exp_dir']}",
        cwd=exp["root"],
    )
    check_ok(proc)
    out = exp["exp_dir"] / "predictor"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["global_step"] == 4
    assert summary["metric_name"] == "val_loss"
    records = read_jsonl(out / "metrics.jsonl")
    assert {"s1_loss", "s2_loss", "lr", "grad_norm"} <= set(records[0])
    assert any(r["type"] == "val" and "val_loss" in r for r in records)
    assert (out / "best" / "model.safetensors").is_file()
    assert str(out / "best") in proc.stdout
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["train_type"] == "predictor"


def test_plot_of_a_finished_run(exp, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "tok.png"
    proc = run_cli(exp["out"], "-o", png, script=PLOT, cwd=tmp_path)
    check_ok(proc)
    assert str(png) in proc.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # three panels with lines, not an empty canvas


# ----------------------------------------------------------------------------- reproduction


def test_rerun_with_the_written_config_reproduces_it_exactly(tmp_path):
    out = tmp_path / "run"
    first = run_cli(
        "--train_type=tokenizer", *TINY, "--max_steps=3", f"--output_dir={out}", cwd=tmp_path
    )
    check_ok(first)
    config_before = (out / "config.yaml").read_bytes()
    metrics_before = read_jsonl(out / "metrics.jsonl")
    # The written file alone (train_type included) is a complete command line.
    saved = tmp_path / "saved.yaml"
    saved.write_bytes(config_before)
    # Into the same folder it is refused (it holds a finished run), untouched ...
    refused = run_cli(f"--config={saved}", cwd=tmp_path)
    assert refused.returncode == 2 and "overwrite=true" in refused.stderr
    assert (out / "config.yaml").read_bytes() == config_before
    # ... and with overwrite=true it is repeated exactly.
    second = run_cli(f"--config={saved}", "--overwrite=true", cwd=tmp_path)
    check_ok(second)
    rerun_config = yaml.safe_load((out / "config.yaml").read_text())
    assert rerun_config == {**yaml.safe_load(config_before), "overwrite": True}
    assert without_timing(read_jsonl(out / "metrics.jsonl")) == without_timing(metrics_before)


# ----------------------------------------------------------------------------- callbacks

RECORDER = '''
import json
import os

from kronos_engine.callback import HOOKS, TrainCallback


class Recorder(TrainCallback):
    """Appends every hook call (name, step) to the file named by $RECORDER_LOG."""

    def __init__(self):
        self.path = os.environ["RECORDER_LOG"]

    def _record(self, hook, ctx):
        with open(self.path, "a") as fh:
            fh.write(json.dumps([hook, ctx.global_step]) + "\\n")


def _make(hook):
    def method(self, ctx, *args):
        self._record(hook, ctx)
    return method


for _hook in HOOKS:
    setattr(Recorder, _hook, _make(_hook))
'''


def test_custom_callback_given_as_module_colon_class(tmp_path):
    (tmp_path / "my_recorder.py").write_text(RECORDER)
    log_file = tmp_path / "calls.jsonl"
    proc = run_cli(
        "--train_type=tokenizer",
        *TINY,
        "--max_steps=3",
        "--val_interval=2",
        "--callbacks=my_recorder:Recorder",
        f"--output_dir={tmp_path / 'out'}",
        cwd=tmp_path,
        env=_env(pythonpath=tmp_path, RECORDER_LOG=str(log_file)),
    )
    check_ok(proc)
    calls = [tuple(c) for c in read_jsonl(log_file)]
    hooks = [h for h, _ in calls]
    assert calls[0] == ("on_train_begin", 0)
    assert calls[1] == ("on_epoch_begin", 0)
    assert calls[-1] == ("on_train_end", 3)
    assert [s for h, s in calls if h == "on_step_end"] == [1, 2, 3]
    assert hooks.count("on_batch_begin") == hooks.count("on_batch_end") == 3
    assert hooks.count("on_optimizer_step") == 3
    assert [s for h, s in calls if h == "on_validation_end"] == [2, 3]
    assert "on_error" not in hooks
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written["callbacks"] == ["my_recorder:Recorder"]


# ----------------------------------------------------------------------------- resume

STOPPER = '''
import os
import signal

from kronos_engine.callback import TrainCallback


class TermAtStep(TrainCallback):
    """Sends this process SIGTERM after step $STOP_AT_STEP, like a cluster preemption."""

    def on_step_end(self, ctx):
        if ctx.global_step == int(os.environ.get("STOP_AT_STEP", "0")):
            os.kill(os.getpid(), signal.SIGTERM)
'''


def test_resume_with_more_steps_continues_the_run(tmp_path):
    out = tmp_path / "run"
    # constant LR: onecycle/cosine schedules are sized by max_steps (see the final report).
    args = [*TINY, "--scheduler=constant", "--ckpt_interval=2", f"--output_dir={out}"]
    first = run_cli("--train_type=tokenizer", *args, "--max_steps=4", cwd=tmp_path)
    check_ok(first)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_4"]
    before = read_jsonl(out / "metrics.jsonl")
    second = run_cli(
        "--train_type=tokenizer", *args, "--max_steps=6", f"--resume={out}", cwd=tmp_path
    )
    check_ok(second)
    assert "resumed from" in second.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 6
    after = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in after if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert after[: len(before)] == before


def test_signal_stop_exits_143_and_resume_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "stopper.py").write_text(STOPPER)
    env = _env(pythonpath=tmp_path, STOP_AT_STEP="3")
    common = [*TINY, "--max_steps=6", "--callbacks=stopper:TermAtStep"]
    stopped_dir, full_dir = tmp_path / "stopped", tmp_path / "full"
    stopped = run_cli(
        "--train_type=tokenizer", *common, f"--output_dir={stopped_dir}", cwd=tmp_path, env=env
    )
    assert stopped.returncode == 128 + 15, stopped.stderr[-2000:]
    assert "stopped by SIGTERM" in stopped.stdout
    assert f"--resume={stopped_dir}" in stopped.stdout
    summary = json.loads((stopped_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["global_step"] < 6
    # Resume exactly as the CLI told us to.
    resumed = run_cli(
        f"--config={stopped_dir / 'config.yaml'}", f"--resume={stopped_dir}", cwd=tmp_path, env=env
    )
    check_ok(resumed)
    full = run_cli(
        "--train_type=tokenizer",
        *common,
        f"--output_dir={full_dir}",
        cwd=tmp_path,
        env=_env(pythonpath=tmp_path, STOP_AT_STEP="0"),
    )
    check_ok(full)
    assert json.loads((stopped_dir / "summary.json").read_text())["global_step"] == 6
    stopped_metrics = without_timing(read_jsonl(stopped_dir / "metrics.jsonl"))
    assert [r["step"] for r in stopped_metrics if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert stopped_metrics == without_timing(read_jsonl(full_dir / "metrics.jsonl"))


# ----------------------------------------------------------------------------- bad configs


def _tokenizer_dir_with_4_bits(root: Path) -> Path:
    from kronos_engine.models import tokenizer_config

    path = root / "tok4"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(tokenizer_config("tiny")))
    return path


def _subprocess_cases(root: Path) -> dict[str, tuple[list[str], str]]:
    """The issue's bad-config cases: name -> (arguments, expected one-line message)."""
    (root / "typo.yaml").write_text("batch_size: 8\nbatch_sise: 16\n")
    tok4 = _tokenizer_dir_with_4_bits(root)
    tok = ["--train_type=tokenizer"]
    pred = ["--train_type=predictor"]
    return {
        "unknown_flag": (
            tok + ["--batch_sise=8"],
            "unknown flag '--batch_sise'; did you mean --batch_size?",
        ),
        "unknown_yaml_key": (
            tok + [f"--config={root / 'typo.yaml'}"],
            f"{root / 'typo.yaml'}:2: unknown key 'batch_sise'; did you mean 'batch_size'?",
        ),
        "wrong_type": (tok + ["--batch_size=abc"], "batch_size: expected an integer, got 'abc'"),
        "bad_choice": (
            tok + ["--sampling=foo"],
            "sampling: 'foo' is not allowed; choose one of ['uniform', 'per_symbol']",
        ),
        "csv_without_data_path": (
            tok + ["--data_source=csv"],
            "data_path: required when data_source is 'csv'",
        ),
        "predictor_without_tokenizer": (pred, "tokenizer_path: no tokenizer at"),
        "bits_mismatch": (
            pred + ["--model_preset=small", f"--tokenizer_path={tok4}"],
            "model_preset: predictor s1_bits/s2_bits (10, 10) differ from the tokenizer's (4, 4)",
        ),
        "max_context_zero": (  # a longer window trains (issue 22, test_public_windows.py)
            tok + ["--max_context=0"],
            "max_context: must be >= 1, got 0",
        ),
        "resume_missing": (
            tok + [f"--resume={root / 'nowhere'}"],
            f"resume: '{root / 'nowhere'}' does not exist",
        ),
        "callback_missing": (
            tok + ["--callbacks=no_such_module_xyz:Recorder"],
            "callbacks: cannot import module 'no_such_module_xyz'",
        ),
    }


SUBPROCESS_CASES = [
    "unknown_flag",
    "unknown_yaml_key",
    "wrong_type",
    "bad_choice",
    "csv_without_data_path",
    "predictor_without_tokenizer",
    "bits_mismatch",
    "max_context_zero",
    "resume_missing",
    "callback_missing",
]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, str]]:
    """Every case at once (each only pays for start-up); each has its own exp_dir so we can
    see that nothing was written."""
    root = tmp_path_factory.mktemp("bad")
    cases = _subprocess_cases(root)
    assert sorted(cases) == sorted(SUBPROCESS_CASES)
    started = {}
    for name, (args, expected) in cases.items():
        exp_dir = root / f"exp_{name}"
        cmd = [sys.executable, str(TRAIN), *args, f"--exp_dir={exp_dir}"]
        popen = subprocess.Popen(
            cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started[name] = (popen, exp_dir, expected)
    results = {}
    for name, (popen, exp_dir, expected) in started.items():
        stdout, stderr = popen.communicate(timeout=300)
        proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
        results[name] = (proc, exp_dir, expected)
    return results


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_config_fails_first_with_one_line(bad_runs, case):
    proc, exp_dir, expected = bad_runs[case]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback, no log of any data or model work
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert proc.stdout == ""
    assert not exp_dir.exists()


# More mistakes, checked in-process through the same `main` (start-up paid once).
IN_PROCESS_CASES = {
    "no_train_type": ([], "train_type: required; pass --train_type=tokenizer"),
    "invalid_yaml": (["--config=broken.yaml"], "broken.yaml:2:1: invalid YAML ("),
    "yaml_not_a_mapping": (["--config=list.yaml"], "list.yaml: expected a mapping"),
    "duplicate_yaml_key": (["--config=dup.yaml"], "dup.yaml:2: key 'epochs' appears twice"),
    "missing_config_file": (["--config=nope.yaml"], "config: file 'nope.yaml' does not exist"),
    "wrong_type_yaml": (
        ["--config=badtype.yaml"],
        "badtype.yaml:2: batch_size: expected an integer",
    ),
    "wrong_bool": (["--progress_bar=maybe"], "progress_bar: expected true or false, got 'maybe'"),
    "null_for_required": (["--batch_size=null"], "batch_size: may not be null"),
    "bad_list": (["--split_ratios=0.5,0.5"], "split_ratios: must be three non-negative numbers"),
    "positional": (["tokenizer"], "unexpected argument 'tokenizer'"),
    "dashed_flag": (["--batch-size=3"], "unknown flag '--batch-size'; did you mean --batch_size?"),
    "predictor_preset_for_tokenizer": (
        ["--model_preset=small"],
        "model_preset: 'small' is not a tokenizer preset; choose one of ['tiny', 'base']",
    ),
    "callback_class_missing": (
        ["--callbacks=kronos_engine.callbacks.graceful_stop:NoSuchClass"],
        "callbacks: module 'kronos_engine.callbacks.graceful_stop' has no attribute 'NoSuchClass'",
    ),
    "callback_not_a_callback": (
        ["--callbacks=json:JSONDecoder"],
        "not a subclass of kronos_engine.callback.TrainCallback",
    ),
    "callback_needs_arguments": (
        ["--callbacks=needs_args:NeedsArgs"],
        "callbacks: 'needs_args:NeedsArgs' cannot be created without arguments",
    ),
    "unknown_strategy": (["--strategy=nope"], "strategy: unknown strategy 'nope'"),
}


@pytest.mark.parametrize("case", sorted(IN_PROCESS_CASES))
def test_more_bad_configs_in_process(case, tmp_path, monkeypatch, capsys):
    from kronos_engine.cli.train import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text("batch_size: [8\n")
    (tmp_path / "list.yaml").write_text("- batch_size\n")
    (tmp_path / "dup.yaml").write_text("epochs: 1\nepochs: 2\n")
    (tmp_path / "badtype.yaml").write_text("epochs: 2\nbatch_size: abc\n")
    (tmp_path / "needs_args.py").write_text(
        "from kronos_engine.callback import TrainCallback\n\n"
        "class NeedsArgs(TrainCallback):\n"
        "    def __init__(self, threshold):\n"
        "        self.threshold = threshold\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args, expected = IN_PROCESS_CASES[case]
    train_type = [] if case == "no_train_type" else ["--train_type=tokenizer"]
    assert main([*train_type, *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0]
    assert not (tmp_path / "outputs").exists()


def test_help_groups_every_flag():
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "--help"], capture_output=True, text=True, timeout=120
    )
    check_ok(proc)
    from kronos_engine.cli.flags import GROUP_TITLES, config_fields

    text = proc.stdout
    positions = [text.index(f"\n{title} options:") for title in GROUP_TITLES.values()]
    assert positions == sorted(positions)
    for f in config_fields():
        group = GROUP_TITLES[f.metadata["group"]]
        section = text.split(f"\n{group} options:")[1].split(" options:\n")[0]
        assert f"--{f.name}" in section, f"--{f.name} not under '{group} options'"
        assert f.metadata.get("help"), f"{f.name} has no help text"


NAN_STRATEGY = '''
import math

from kronos_engine.strategies.tokenizer_recon import TokenizerReconStrategy


class NanAtStep2(TokenizerReconStrategy):
    """The public tokenizer loss, except that step 2's is NaN."""

    def training_step(self, model, batch, ctx):
        out = super().training_step(model, batch, ctx)
        if ctx.global_step == 1:
            out.loss = out.loss * math.nan
        return out
'''


def test_non_finite_loss_ends_with_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    from kronos_engine.cli.train import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nan_strategy.py").write_text(NAN_STRATEGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    args = ["--train_type=tokenizer", *TINY, "--max_steps=4", f"--output_dir={out}"]
    assert main([*args, "--strategy=nan_strategy:NanAtStep2"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "step 2" in err[0], err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["global_step"] == 1
