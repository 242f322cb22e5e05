"""Bad input, third round (issue 19), the "Damage" class: output locations that destroyed a
user's work with exit 0.

The rule (`kronos_engine.run.outputs_guard`): an output of predict, evaluate, backtest or plot
is new, or something the same command wrote before (its `.kronos_output.json` marker; for a
single file: not a run's file and not the input); never an experiment or run folder, the input
data, or anything else that exists. A violation is one line `error: <flag>: '<path>' ...`, exit
code 2, raised before any work, with every byte under the case folder unchanged. The commands
run in this process (`main` of each), on a tiny CSV fine-tune and a Qlib provider.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from engine_helpers import evaluated_qlib_experiment
from round3_helpers import finished_csv_run, one_error, private_copy, refused
from test_faults_bad_input import _assert_untouched, snapshot

from kronos_engine.cli.backtest import main as backtest_main
from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.plot import main as plot_main
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.data import generate_demo_frames

REPO = Path(__file__).resolve().parents[1]
MARKER = ".kronos_output.json"
FAST_EVAL = ["--no_model", "--max_origins", "3", "--no_plots", "--no_progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A folder with `klines/` (3 CSV symbols), `tok/` and `exp/predictor/` (a tiny
    predictor fine-tuned for 2 steps on the CSVs: config.yaml, best/, checkpoints/ ...)."""
    return finished_csv_run(tmp_path_factory.mktemp("round3"))


@pytest.fixture
def case(finished, tmp_path) -> Path:
    """A private copy of the finished run, the CSVs it read and the user's notes."""
    root = private_copy(finished, tmp_path)
    (root / "exp" / "NOTES.txt").write_text("the user's own notes\n")
    return root


_one_error, _refused = one_error, refused


# ------------------------------------------------------------------ evaluate


@pytest.mark.parametrize("where", ["exp", "exp/predictor", "file", "data", "user_folder"])
def test_evaluate_never_replaces_an_experiment_a_run_a_file_or_the_data(case, capsys, where):
    exp = case / "exp"
    target = {
        "exp": exp,
        "exp/predictor": exp / "predictor",
        "file": case / "results.txt",
        "data": case / "klines",
        "user_folder": case / "mine",
    }[where]
    if where == "file":
        target.write_text("the user's results\n")
    if where == "user_folder":
        target.mkdir()
        (target / "thesis.md").write_text("months of work\n")
    argv = ["--exp_dir", str(exp), "--output", str(target), *FAST_EVAL]
    line = _refused(capsys, case, evaluate_main, argv, "--output", str(target))
    assert "give a new folder" in line
    if where == "exp":
        assert "holds the run folder" in line
    if where == "exp/predictor":
        assert "is a run folder" in line


def test_evaluate_default_output_reruns_and_replaces_its_own_folder(case, capsys):
    exp = case / "exp"
    assert evaluate_main(["--exp_dir", str(exp), *FAST_EVAL]) == 0
    eval_dir = exp / "eval"
    assert json.loads((eval_dir / MARKER).read_text())["command"] == "evaluate"
    (eval_dir / "stale.txt").write_text("from the earlier evaluation\n")
    assert evaluate_main(["--exp_dir", str(exp), *FAST_EVAL, "--max_origins", "2"]) == 0
    assert not (eval_dir / "stale.txt").exists()  # replaced whole, not merged
    assert {"metrics.json", "forecasts.parquet", MARKER} <= {p.name for p in eval_dir.iterdir()}
    assert not [p.name for p in exp.iterdir() if p.name.startswith(".eval")]
    # An evaluation folder written before the marker existed is recognised by its files.
    legacy = case / "old_eval"
    shutil.copytree(eval_dir, legacy)
    (legacy / MARKER).unlink()
    assert evaluate_main(["--exp_dir", str(exp), *FAST_EVAL, "--output", str(legacy)]) == 0
    assert (legacy / MARKER).is_file()


# ------------------------------------------------------------------ predict


def _predict_args(case: Path, *extra: str) -> list[str]:
    return ["--exp_dir", str(case / "exp"), "--top_k=1", *extra]


def test_predict_never_writes_its_forecast_over_the_input_data(case, capsys):
    data = case / "X.csv"
    generate_demo_frames(1, 120, "day", seed=9)["DEMO000"].to_csv(data, index=False)
    argv = _predict_args(case, f"--data_path={data}", f"--output={data}")
    _refused(capsys, case, predict_main, argv, "--output", str(data), "input")
    folder = case / "other_klines"
    folder.mkdir()
    shutil.copy(data, folder / "Y.csv")
    argv = _predict_args(case, f"--data_path={folder}", f"--output={folder / 'Y.csv'}")
    _refused(capsys, case, predict_main, argv, "--output", "Y.csv")


def test_predict_never_writes_into_a_run(case, capsys):
    for target in ("exp/predictor/checkpoints/f.csv", "exp/predictor/best/f.parquet"):
        argv = _predict_args(case, f"--output={case / target}")
        _refused(capsys, case, predict_main, argv, "--output", "part of a run folder")


def test_predict_plot_onto_an_existing_file_fails_first_and_keeps_the_forecast(case, capsys):
    out = case / "f.csv"
    out.write_text("previous results\n")
    plot = case / "figure.png"
    plot.write_bytes(b"the user's figure")
    argv = _predict_args(case, f"--output={out}", f"--plot={plot}")
    line = _refused(capsys, case, predict_main, argv, "--plot", str(plot), "existing file")
    assert "Errno" not in line
    for target in (case / "exp", case / "exp" / "predictor"):
        argv = _predict_args(case, f"--output={out}", f"--plot={target}")
        _refused(capsys, case, predict_main, argv, "--plot", str(target), "run folder")


def test_predict_plot_folder_may_not_hold_the_forecast(case, capsys):
    out = case / "plots" / "f.csv"
    argv = _predict_args(case, f"--output={out}", f"--plot={case / 'plots'}")
    _refused(capsys, case, predict_main, argv, "--plot", "holds the --output file")


def test_plots_of_symbols_with_slashes_stay_in_the_plot_folder(case, capsys):
    pytest.importorskip("matplotlib")
    frame = generate_demo_frames(1, 60, "day", seed=2)["DEMO000"]
    names = ["../evil", "a/b", "a_b", "/abs"]
    table = pd.concat([frame.assign(symbol=name) for name in names], ignore_index=True)
    data = case / "long.csv"
    table.to_csv(data, index=False)
    plots = case / "out" / "plots"
    argv = _predict_args(case, f"--data_path={data}", f"--output={case / 'out' / 'f.csv'}")
    before = {p for p in case.rglob("*")}
    assert predict_main([*argv, f"--plot={plots}"]) == 0
    new = {p for p in case.rglob("*")} - before
    assert all(p == case / "out" or case / "out" in p.parents for p in new), sorted(new)
    pngs = sorted(p.name for p in plots.iterdir() if p.suffix == ".png")
    assert pngs == ["_._evil.png", "_abs.png", "a_b-2.png", "a_b.png"]
    assert pd.read_csv(case / "out" / "f.csv")["symbol"].nunique() == 4
    # The same command again replaces its own plot folder.
    assert predict_main([*argv, f"--plot={plots}"]) == 0
    # Its marker lies beside it (the folder lists only its pictures) and names its files:
    marker = json.loads((plots.parent / f".plots{MARKER}").read_text())
    assert marker["command"] == "predict --plot" and set(marker["files"]) == set(pngs)
    # a file the user put there makes it the user's folder again.
    (plots / "mine.txt").write_text("keep me\n")
    _refused(capsys, case, predict_main, [*argv, f"--plot={plots}"], "--plot", "not written")


def test_safe_file_names_are_unique_and_never_leave_the_folder():
    from kronos_engine.run.outputs_guard import safe_file_names

    names = safe_file_names(["..", "../x", "a/b", "A_B", "a_b", "", "ok"], ".png")
    assert names["ok"] == "ok.png" and names["A_B"] == "A_B.png"
    assert len({n.lower() for n in names.values()}) == len(names)
    assert all("/" not in n and not n.startswith(".") for n in names.values())


# ------------------------------------------------------------------ backtest


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict:
    """8 demo symbols as a Qlib provider and the baselines' forecasts of its test split."""
    pytest.importorskip("qlib")
    return evaluated_qlib_experiment(tmp_path_factory.mktemp("round3_backtest"))


def _backtest_args(evaluated: dict, *extra: str) -> list[str]:
    exp, provider = evaluated["exp"], evaluated["provider"]
    return ["--exp_dir", str(exp), "--provider", str(provider), "--topk", "3", "--n_drop", "1",
            *extra]  # fmt: skip


def test_backtest_output_onto_a_file_the_evaluation_or_a_run_is_refused(evaluated, case, capsys):
    report = case / "report.txt"
    report.write_text("the user's report\n")
    evaluation = shutil.copytree(evaluated["exp"] / "eval", case / "an_evaluation")
    for target, needle in [
        (report, "existing file"),
        (evaluated["exp"] / "eval", "holds the input"),
        (evaluation, "was written by evaluate, not backtest"),
        (case / "exp", "holds the run folder"),
        (evaluated["provider"], "input"),
    ]:
        argv = _backtest_args(evaluated, "--output", str(target))
        roots = [case, evaluated["exp"].parent]
        _refused(capsys, roots, backtest_main, argv, "--output", str(target), needle)


def test_backtest_reruns_into_its_own_folder(evaluated, tmp_path):
    out = tmp_path / "bt"
    assert backtest_main(_backtest_args(evaluated, "--output", str(out))) == 0
    (out / "stale.txt").write_text("x")
    assert backtest_main(_backtest_args(evaluated, "--output", str(out))) == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "report.csv", MARKER} <= names and "stale.txt" not in names


_SIGTERM_DURING_THE_PLOT = """
import os, signal, sys
from kronos_engine.evaluation import backtest
def plot(*args, **kwargs):  # the files before the plot are written, then the signal comes
    os.kill(os.getpid(), signal.SIGTERM)
backtest._plot = plot
from kronos_engine.cli.backtest import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_backtest_leaves_the_earlier_report_whole(evaluated, tmp_path):
    out = tmp_path / "bt"
    assert backtest_main(_backtest_args(evaluated, "--output", str(out))) == 0
    before = snapshot(out)
    argv = _backtest_args(evaluated, "--output", str(out), "--benchmark", "DEMO000")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_DURING_THE_PLOT, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-2000:]
    _assert_untouched(before, snapshot(out))  # no new report.csv beside the old report.json


# ------------------------------------------------------------------ plot


def test_plot_never_draws_over_a_runs_files(case, capsys):
    pytest.importorskip("matplotlib")
    run_dir = case / "exp" / "predictor"
    for target, needle in [
        (run_dir / "metrics.jsonl", "part of a run folder"),
        (run_dir / "config.yaml", "part of a run folder"),
        (case / "exp", "existing folder"),
    ]:
        _refused(capsys, case, plot_main, [str(run_dir), "-o", str(target)], "--output", needle)
    assert plot_main([str(run_dir)]) == 0 and (run_dir / "loss.png").is_file()
    assert plot_main([str(run_dir)]) == 0  # the default again: its own earlier picture
