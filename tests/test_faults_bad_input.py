"""Property 6: malformed inputs (data files, Qlib folders, configs, checkpoints, tokenizer /
predictor mismatches, an output dir that is under a file, read-only or full) each end the CLI
with one line `error: ...` naming the culprit, a non-zero exit code, and existing outputs
untouched.

The matrix goes through `kronos_engine.cli.train.main` (what `scripts/train.py` runs) in this process:
start-up is paid once and stderr must be exactly the one error line. Resume cases point at an
output dir holding a finished run (checkpoints, best/, metrics, summary) plus a sentinel; the
others at a fresh output dir holding only a sentinel. Every byte under the case folder (inputs
included) must be the same afterwards. Output-dir faults that need a mount or a file-size limit,
and two matrix cases for the process exit code, run `scripts/train.py` in subprocesses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import faultinject as fi
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from kronos_engine.data import generate_demo_frames, write_qlib_provider

EXIT_USAGE, EXIT_FAILED = 2, 1

# Flags of a small run; each case adds its culprit.
BASE = [
    "--model_preset=tiny",
    "--demo_symbols=2",
    "--demo_length=200",
    "--lookback_window=20",
    "--predict_window=4",
    "--batch_size=4",
    "--train_samples_per_epoch=16",
    "--val_samples=8",
    "--epochs=1",
    "--progress_bar=false",
    "--device=cpu",
]


def _csv(root: Path, name: str, edit=None, rows: int = 200) -> Path:
    """A valid daily CSV for one symbol, then `edit(frame)` applied to it."""
    frame = generate_demo_frames(1, rows, "day", seed=5)["DEMO000"]
    frame["timestamps"] = frame["timestamps"].dt.strftime("%Y-%m-%d")
    if edit is not None:
        frame = edit(frame)
    path = root / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _set(row: int, column: str, value):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return edit


def _csv_args(path: Path) -> list[str]:
    return ["--train_type=tokenizer", "--data_source=csv", f"--data_path={path}"]


def _qlib(root: Path, remove: str) -> Path:
    frames = generate_demo_frames(2, 200, "day", seed=5)
    provider = write_qlib_provider(frames, root / f"qlib_{remove.strip('/')}", "day")
    shutil.rmtree(provider / remove)
    return provider


def _tokenizer_dir(root: Path, name: str) -> Path:
    path = root / name
    shutil.copytree(fi.make_tokenizer(root / "tok_ok"), path)
    return path


def _truncated_tokenizer(root: Path) -> Path:
    path = _tokenizer_dir(root, "tok_truncated")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return path


def _wrong_shape_tokenizer(root: Path) -> Path:
    path = _tokenizer_dir(root, "tok_shape")
    state = load_file(str(path / "model.safetensors"))
    key = sorted(k for k in state if state[k].dim() == 2)[0]
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _bad_json_tokenizer(root: Path) -> Path:
    path = _tokenizer_dir(root, "tok_json")
    (path / "config.json").write_text('{"d_in": 6,')
    return path


def _damage_all_checkpoints(run: Path) -> None:
    for i, ckpt in enumerate(sorted((run / "checkpoints").iterdir())):
        target = ckpt / ("model.safetensors" if i % 2 else "trainer_state.json")
        target.write_bytes(target.read_bytes()[:-7])


def _dup_timestamp(frame: pd.DataFrame) -> pd.DataFrame:
    stamps = list(frame["timestamps"])
    stamps[10] = stamps[9]  # same timestamp, different prices
    return frame.assign(timestamps=stamps)


def _cases(root: Path, run: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, fragment the error line must contain). `run` holds a finished run."""
    tok, pred = ["--train_type=tokenizer"], ["--train_type=predictor"]
    resume = [f"--output_dir={run}", f"--resume={run}"]
    (root / "broken.yaml").write_text("epochs: 1\nbatch_size: [4\n")
    (root / "unknown.yaml").write_text("epochs: 1\nlearning_rate: 0.1\n")
    (root / "afile").write_text("not a folder\n")
    (root / "zero_bytes.csv").write_text("")
    (root / "header_only.csv").write_text("timestamps,open,high,low,close,volume,amount\n")
    tok_ok = fi.make_tokenizer(root / "tok_ok")
    return {
        "csv_nan_cell": (
            _csv_args(_csv(root, "nan", _set(17, "close", float("nan")))),
            "nan.csv: symbol nan, row 18",
        ),
        "csv_missing_column": (
            _csv_args(_csv(root, "no_volume", lambda f: f.drop(columns=["volume"]))),
            "no_volume.csv: symbol no_volume: missing column(s) volume",
        ),
        "csv_non_numeric_cell": (
            _csv_args(_csv(root, "text", _set(5, "open", "abc"))),
            "text.csv: symbol text, row 6",
        ),
        "csv_high_below_low": (
            _csv_args(_csv(root, "hl", _set(30, "high", 1.0))),
            "hl.csv: symbol hl, row 31",
        ),
        "csv_conflicting_duplicate_timestamps": (
            _csv_args(_csv(root, "dup", _dup_timestamp)),
            "timestamp also used by row 10",
        ),
        "csv_unsorted_timestamps": (
            _csv_args(_csv(root, "unsorted", lambda f: f.iloc[[0, 1, 3, 2, *range(4, len(f))]])),
            "unsorted.csv: symbol unsorted, row 4",
        ),
        "csv_bad_timestamp": (
            _csv_args(_csv(root, "ts", _set(3, "timestamps", "yesterday"))),
            "ts.csv: symbol ts, row 4: timestamp 'yesterday'",
        ),
        "csv_zero_bytes": (_csv_args(root / "zero_bytes.csv"), "zero_bytes.csv: cannot be read"),
        "csv_header_only": (_csv_args(root / "header_only.csv"), "header_only (0 rows"),
        "csv_missing_file": (_csv_args(root / "nowhere.csv"), f"'{root / 'nowhere.csv'}'"),
        "qlib_without_features": (
            tok + ["--data_source=qlib", f"--data_path={_qlib(root, 'features')}"],
            "is missing features/",
        ),
        "qlib_without_calendars": (
            tok + ["--data_source=qlib", f"--data_path={_qlib(root, 'calendars')}"],
            "is missing calendars/day.txt",
        ),
        "yaml_syntax_error": (
            tok + [f"--config={root / 'broken.yaml'}"],
            "broken.yaml:3:1: invalid YAML",
        ),
        "yaml_unknown_key": (
            tok + [f"--config={root / 'unknown.yaml'}"],
            "unknown.yaml:2: unknown key 'learning_rate'",
        ),
        "flag_wrong_type": (tok + ["--epochs=two"], "epochs: expected an integer, got 'two'"),
        "flag_bad_choice": (tok + ["--scheduler=linear"], "scheduler: 'linear' is not allowed"),
        "max_context_not_positive": (  # a longer window trains (issue 22)
            tok + ["--max_context=-1"],
            "max_context: must be >= 1, got -1",
        ),
        "predictor_without_tokenizer": (
            pred + [f"--tokenizer_path={root / 'no_tok'}"],
            f"tokenizer_path: no tokenizer at '{root / 'no_tok'}'",
        ),
        "predictor_bits_mismatch": (
            pred + ["--model_preset=small", f"--tokenizer_path={tok_ok}"],
            "s1_bits/s2_bits (10, 10) differ from the tokenizer's (4, 4)",
        ),
        "tokenizer_truncated_weights": (
            pred + [f"--tokenizer_path={_truncated_tokenizer(root)}"],
            "tok_truncated/model.safetensors",
        ),
        "tokenizer_wrong_shape_tensor": (
            pred + [f"--tokenizer_path={_wrong_shape_tokenizer(root)}"],
            "tok_shape/model.safetensors",
        ),
        "tokenizer_invalid_config_json": (
            pred + [f"--tokenizer_path={_bad_json_tokenizer(root)}"],
            "tok_json/config.json",
        ),
        "resume_without_checkpoints": (
            tok + [f"--resume={root / 'afile'}"],
            f"no checkpoint folder (step_<N>) under '{root / 'afile'}'",
        ),
        "resume_every_checkpoint_damaged": (tok + resume, "every checkpoint under"),
        "resume_other_train_type": (
            pred + resume + [f"--tokenizer_path={tok_ok}"],
            "checkpoint is for train_type 'tokenizer', this run is 'predictor'",
        ),
        "resume_other_model_shape": (
            tok + resume + ["--model_preset=base"],
            "model.safetensors: does not fit the model",
        ),
        "fresh_run_into_a_finished_run": (
            tok + [f"--output_dir={run}"],
            f"output_dir: '{run}' already holds a run",
        ),
        "output_dir_under_a_file": (
            tok + [f"--output_dir={root / 'afile' / 'out'}"],
            f"'{root / 'afile' / 'out'}'",
        ),
    }


CASE_NAMES = [
    "csv_nan_cell",
    "csv_missing_column",
    "csv_non_numeric_cell",
    "csv_high_below_low",
    "csv_conflicting_duplicate_timestamps",
    "csv_unsorted_timestamps",
    "csv_bad_timestamp",
    "csv_zero_bytes",
    "csv_header_only",
    "csv_missing_file",
    "qlib_without_features",
    "qlib_without_calendars",
    "yaml_syntax_error",
    "yaml_unknown_key",
    "flag_wrong_type",
    "flag_bad_choice",
    "max_context_not_positive",
    "predictor_without_tokenizer",
    "predictor_bits_mismatch",
    "tokenizer_truncated_weights",
    "tokenizer_wrong_shape_tensor",
    "tokenizer_invalid_config_json",
    "resume_without_checkpoints",
    "resume_every_checkpoint_damaged",
    "resume_other_train_type",
    "resume_other_model_shape",
    "fresh_run_into_a_finished_run",
    "output_dir_under_a_file",
]
# Failing after the data were read: exit code 1 (an OSError); every other case is 2.
EXIT_CODES = {"output_dir_under_a_file": EXIT_FAILED}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under `root` with its bytes (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _finished_run(tmp_path_factory, dest: Path) -> Path:
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    shutil.copytree(reference, dest)
    (dest / "SENTINEL").write_text("user data that must survive\n")
    return dest


def _prepare(tmp_path_factory, case_root: Path, name: str) -> tuple[list[str], str]:
    run = _finished_run(tmp_path_factory, case_root / "run")
    if name == "resume_every_checkpoint_damaged":
        _damage_all_checkpoints(run)
    fresh = case_root / "out"  # a new run's output dir, holding only the user's sentinel
    fresh.mkdir()
    (fresh / "SENTINEL").write_text("user data that must survive\n")
    args, expected = _cases(case_root, run)[name]
    if not any(a.startswith("--output_dir=") for a in args):
        args = args + [f"--output_dir={fresh}"]
    return [*BASE, *args, f"--exp_dir={case_root / 'exp'}"], expected


def _assert_untouched(before: dict, after: dict) -> None:
    assert sorted(after) == sorted(before), sorted(set(after) ^ set(before))
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, changed


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_fails_with_one_line_and_touches_nothing(
    tmp_path_factory, tmp_path, capsys, case
):
    from kronos_engine.cli.train import main

    args, expected = _prepare(tmp_path_factory, tmp_path, case)
    before = snapshot(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert code == EXIT_CODES.get(case, EXIT_USAGE), err
    _assert_untouched(before, snapshot(tmp_path))


def test_the_matrix_has_at_least_20_cases():
    assert len(set(CASE_NAMES)) == len(CASE_NAMES) >= 20


# ------------------------------------------------------------------ the output dir itself


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result
    assert "Traceback" not in result.stderr, result
    return lines[-1]


@contextlib.contextmanager
def _tmpfs(path: Path, size_kb: int, read_only: bool = False):
    """A size-limited (or read-only) tmpfs at `path`; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here; the tmpfs cases need root with CAP_SYS_ADMIN")
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root with CAP_SYS_ADMIN"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill_to(path: Path, free_kb: int) -> None:
    """Leave about `free_kb` KiB free on the filesystem holding `path`."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize - free_kb * 1024
    if free > 0:
        (path / "ballast").write_bytes(b"\0" * free)


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_finished_run(
    tmp_path_factory, tmp_path
):
    """Real ENOSPC: a tmpfs holding a finished run, with ~96 KiB free for a new run."""
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    with _tmpfs(tmp_path / "disk", size_kb=8192) as disk:
        shutil.copytree(reference, disk / "finished")
        (disk / "finished" / "SENTINEL").write_text("user data that must survive\n")
        _fill_to(disk, free_kb=96)
        before = snapshot(disk / "finished")
        out = disk / "new"
        result = fi.run(fi.train_args("tokenizer", out), tmp_path / "logs")
        line = _one_error_line(result)
        assert result.returncode == EXIT_FAILED, result
        assert f"{out / 'checkpoints' / 'step_1'}: " in line and "No space left" in line, line
        _assert_untouched(before, snapshot(disk / "finished"))
        # The partial checkpoint was removed again (its space given back), none is resumable.
        assert not list((out / "checkpoints").iterdir())


def test_file_size_limit_while_checkpointing_is_one_line(tmp_path):
    """The same write failure without a mount: RLIMIT_FSIZE makes a big write fail with EFBIG."""
    out = tmp_path / "run"
    limit = 100_000  # the tiny tokenizer's weights are ~170 kB
    proc = fi.start(fi.train_args("tokenizer", out), tmp_path / "logs", file_size_limit=limit)
    result = fi.finish(proc)
    line = _one_error_line(result)
    assert result.returncode == EXIT_FAILED, result
    assert f"{out / 'checkpoints' / 'step_1'}: " in line and "File too large" in line, line
    assert not list((out / "checkpoints").iterdir())


def test_read_only_output_dir_is_one_line_and_untouched(tmp_path_factory, tmp_path):
    """EROFS even for root: a finished run on a tmpfs re-mounted read-only, resumed."""
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    with _tmpfs(tmp_path / "disk", size_kb=16384) as disk:
        run = disk / "finished"
        shutil.copytree(reference, run)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(run)
        args = fi.train_args("tokenizer", run) + [f"--resume={run}"]
        result = fi.run(args, tmp_path / "logs")
        line = _one_error_line(result)
        assert result.returncode == EXIT_FAILED, result
        assert "Read-only file system" in line and str(run) in line, line
        _assert_untouched(before, snapshot(run))


@pytest.mark.parametrize("case", ["csv_nan_cell", "resume_every_checkpoint_damaged"])
def test_bad_input_in_a_real_process_exits_2_with_one_line(tmp_path_factory, tmp_path, case):
    args, expected = _prepare(tmp_path_factory, tmp_path, case)
    before = snapshot(tmp_path)
    result = fi.run(args, tmp_path / "logs")
    line = _one_error_line(result)
    assert expected in line and result.returncode == EXIT_USAGE, result
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("logs")}
    _assert_untouched(before, after)
