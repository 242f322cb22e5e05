"""Bad input, third round (issue 19), the toolbox keys of `scripts/train.py`: what failed late,
ran twice or said too little now fails at the start with one line, or says it.

Each refusal is one line `error: <key>: ...` naming the key and the values involved, exit code
2, raised before any run folder exists (or, resuming, with every byte of the run unchanged).
The commands run in this process (`cli.train.main`) on tiny demo runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from engine_helpers import save_random_tokenizer
from test_faults_bad_input import BASE, EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine import TrainConfig
from kronos_engine.cli.train import main
from kronos_engine.models import build_tokenizer
from kronos_engine.run.checkpoints import list_checkpoints, write_manifest
from kronos_engine.training.outcome import describe_results


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _train(tmp_path: Path, *args: str) -> int:
    return main([*BASE, "--train_type=tokenizer", f"--exp_dir={tmp_path / 'exp'}", *args])


def _first_run(tmp_path: Path, capsys, *args: str) -> Path:
    out = tmp_path / "run"
    assert _train(tmp_path, f"--output_dir={out}", "--max_steps=2", *args) == 0
    capsys.readouterr()
    return out


# ------------------------------------------------------------- resume with another trainable set

RESUME_CHANGES = {  # first run's flags, the resume's, its error, flags that resume it
    "freeze_as_full": (
        ["--finetune_method=freeze"],
        ["--finetune_method=full"],
        "finetune_method: the checkpoint .* was trained with 'freeze', this run asks for 'full'",
        ["--finetune_method=freeze"],
    ),
    "full_as_freeze": (
        [],
        ["--finetune_method=freeze"],
        "finetune_method: .* trained with 'full', this run asks for 'freeze'",
        [],
    ),
    "other_freeze_patterns": (
        ["--finetune_method=freeze"],
        ["--finetune_method=freeze", "--freeze_patterns=embed.*"],
        r"freeze_patterns: .* trained with \[embed\.\*, encoder\.0\.\*\], this run asks for "
        r"\[embed\.\*\]",
        # the default patterns written out, in another order: the same parameters
        ["--finetune_method=freeze", "--freeze_patterns=encoder.0.*,embed.*"],
    ),
    "other_lora_r": (
        ["--finetune_method=lora", "--lora_r=4"],
        ["--finetune_method=lora", "--lora_r=8"],
        "lora_r: .* trained with 4, this run asks for 8.*--lora_r=4",
        ["--finetune_method=lora", "--lora_r=4", "--lora_dropout=0.2"],  # dropout may change
    ),
    "other_lora_alpha": (
        ["--finetune_method=lora", "--lora_alpha=8"],
        ["--finetune_method=lora", "--lora_alpha=32"],
        "lora_alpha: .* trained with 8.0, this run asks for 32.0",
        ["--finetune_method=lora", "--lora_alpha=8.0"],
    ),
    "other_lora_targets": (
        ["--finetune_method=lora", "--lora_targets=q_proj,v_proj"],
        ["--finetune_method=lora", "--lora_targets=q_proj"],
        r"lora_targets: .* trained with \[q_proj, v_proj\], this run asks for \[q_proj\]",
        ["--finetune_method=lora", "--lora_targets=v_proj,q_proj"],
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CHANGES))
def test_a_resume_that_trains_other_parameters_names_the_key_and_both_values(
    tmp_path, capsys, case
):
    """Before: an optimizer ValueError traceback (freeze -> full), or "does not fit the model"
    without the values (another lora_r). The same trainable set, however spelled, resumes."""
    if "lora" in case:
        pytest.importorskip("peft")
    first, then, expected, same = RESUME_CHANGES[case]
    out = _first_run(tmp_path, capsys, *first)
    before = snapshot(tmp_path)
    resume = [f"--output_dir={out}", "--max_steps=4", f"--resume={out}"]
    code = _train(tmp_path, *resume, *then)
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert re.search(expected, line), line
    _assert_untouched(before, snapshot(tmp_path))
    assert _train(tmp_path, *resume, *same) == 0, capsys.readouterr().err


def _drop_checkpoint_config(out: Path) -> None:
    """Checkpoints as an older version wrote them: no config.yaml (the manifest rewritten)."""
    for step in list_checkpoints(out / "checkpoints"):
        (step / "config.yaml").unlink()
        write_manifest(step)


def test_without_the_checkpoints_config_the_optimizer_state_still_refuses_in_one_line(
    tmp_path, capsys
):
    out = _first_run(tmp_path, capsys, "--finetune_method=freeze")
    _drop_checkpoint_config(out)
    before = snapshot(tmp_path)
    code = _train(tmp_path, f"--output_dir={out}", "--max_steps=4", f"--resume={out}")
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert re.search(r"optimizer\.pt: holds the state of \d+ trainable parameter tensors, this "
                     r"run trains \d+", line), line  # fmt: skip
    _assert_untouched(before, snapshot(tmp_path))


def test_without_the_checkpoints_config_the_adapter_names_its_rank(tmp_path, capsys):
    pytest.importorskip("peft")
    out = _first_run(tmp_path, capsys, "--finetune_method=lora", "--lora_r=4")
    _drop_checkpoint_config(out)
    before = snapshot(tmp_path)
    code = _train(
        tmp_path,
        f"--output_dir={out}",
        "--max_steps=4",
        f"--resume={out}",
        "--finetune_method=lora",
        "--lora_r=8",
    )
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert re.search("lora_r: the checkpoint .* holds an adapter with 4, this run asks for 8", line)
    _assert_untouched(before, snapshot(tmp_path))


# ------------------------------------------------------------- trackers, before any run folder

BAD_URIS = {
    "unknown_scheme": ("foo://x", "has the scheme 'foo', which MLflow cannot store runs in"),
    "sqlite_folder_missing": (
        "sqlite:///{tmp}/nowhere/mlflow.db",
        "folder '.*nowhere' of the SQLite database does not exist",
    ),
    "sqlite_not_a_database": ("sqlite:///{tmp}/notes.txt", "exists and is not an SQLite database"),
    "sqlite_in_memory": ("sqlite://", "in-memory database"),
    "folder_is_a_file": ("{tmp}/notes.txt", "notes.txt"),
    "http_without_host": ("http://", "names no server"),
    "database_without_driver": ("mssql+nosuchdriver://u@h/db", "mssql"),
}


@pytest.mark.parametrize("case", sorted(BAD_URIS))
def test_a_tracking_uri_mlflow_cannot_use_fails_before_the_run_folder_exists(
    tmp_path, capsys, case
):
    """Before: a traceback (or one line) after the run folder was written, so the rerun with a
    good URI needed --overwrite. Now the folder never appears and the rerun just works."""
    pytest.importorskip("mlflow")
    uri, expected = BAD_URIS[case]
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = snapshot(tmp_path)
    out = tmp_path / "run"
    args = [f"--output_dir={out}", "--max_steps=1", "--loggers=mlflow"]
    code = _train(tmp_path, *args, f"--tracking_uri={uri.format(tmp=tmp_path)}")
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert line.startswith("error: tracking_uri: ") and re.search(expected, line), line
    assert not out.exists()
    _assert_untouched(before, snapshot(tmp_path))


def test_after_a_refused_tracking_uri_the_rerun_needs_no_overwrite(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow keeps a tracking_uri's artifacts in ./mlruns
    out = tmp_path / "run"
    args = [f"--output_dir={out}", "--max_steps=1", "--loggers=mlflow"]
    assert _train(tmp_path, *args, "--tracking_uri=foo://x") == EXIT_USAGE
    good = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _train(tmp_path, *args, f"--tracking_uri={good}") == 0, capsys.readouterr().err
    assert (tmp_path / "mlflow.db").is_file() and (out / "summary.json").is_file()


def test_a_tracking_uri_without_mlflow_is_refused(tmp_path, capsys):
    """Only MLflow reads it: with tensorboard alone the value was silently dropped."""
    code = _train(tmp_path, "--loggers=tensorboard", "--tracking_uri=sqlite:///x.db")
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert line.startswith("error: tracking_uri: 'sqlite:///x.db' is only read by the mlflow")
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--loggers=tensorboard,tensorboard"], "loggers: 'tensorboard' is listed twice"),
        (["--loggers", "tensorboard", "tensorboard"], "loggers: 'tensorboard' is listed"),
        (["--callbacks=tensorboard", "--loggers=tensorboard"], "callbacks: 'tensorboard' is also"),
    ],
)
def test_a_logger_listed_twice_is_refused(tmp_path, capsys, args, expected):
    """Before: two trackers wrote every record twice (two TensorBoard runs), exit 0."""
    code = _train(tmp_path, "--max_steps=1", *args)
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE and line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------- LoRA targets


@pytest.mark.parametrize(
    "targets, bad",
    [
        ("ffn", "'ffn' is not a Linear layer (but FeedForward)"),
        ("q_proj,norm1,self_attn", "'norm1', 'self_attn' are not Linear layers"),
        ("qkv", "no module named 'qkv' in the KronosTokenizer"),
    ],
)
def test_lora_targets_that_are_not_linear_layers_are_one_line_at_the_start(
    tmp_path, capsys, targets, bad
):
    """Before: peft's ValueError traceback after the data was built ('ffn' names a module)."""
    pytest.importorskip("peft")
    code = _train(tmp_path, "--finetune_method=lora", f"--lora_targets={targets}")
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert line.startswith("error: lora_targets: ") and bad in line, line
    allowed = re.search(r"allowed: the Linear layers \[(.*?)\]", line).group(1)
    assert {"q_proj", "w1", "out_proj", "head"} <= {n.strip(" '") for n in allowed.split(",")}
    assert not (tmp_path / "exp").exists()  # no data cache, no run folder


# ------------------------------------------------------------- a best_metric that is never defined


@pytest.fixture
def predictor_args(tmp_path) -> list[str]:
    tok = save_random_tokenizer(tmp_path / "tok")
    return [
        *BASE,
        "--train_type=predictor",
        f"--tokenizer_path={tok}",
        f"--exp_dir={tmp_path / 'exp'}",
        "--max_steps=2",
        "--forecast_val_origins=8",
        "--best_mode=max",
    ]


def test_one_symbol_has_no_rank_ic_and_two_have(tmp_path, capsys, predictor_args):
    """Before: exit 0 "completed" with no best/, and "no validation ran" (it ran)."""
    code = main([*predictor_args, "--demo_symbols=1", "--best_metric=val_rank_ic"])
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE
    assert line == (
        "error: best_metric: 'val_rank_ic' is cross-sectional and needs at least 2 symbols in "
        "the validation split; it has 1; use more symbols or another best_metric (e.g. val_mae "
        "with best_mode min)"
    )
    assert not (tmp_path / "exp" / "predictor").exists()
    assert main([*predictor_args, "--best_metric=val_rank_ic"]) == 0, capsys.readouterr().err
    assert (tmp_path / "exp" / "predictor" / "best").is_dir()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--demo_symbols=1", "--best_metric=val_icir"], "best_metric: 'val_icir' is cross"),
        (["--best_metric=val_crps"], "best_metric: 'val_crps' is computed from several sample"),
        (["--best_metric=val_coverage_80"], "best_metric: 'val_coverage_80' is computed from"),
    ],
)
def test_a_best_metric_the_data_can_never_define_is_refused_at_the_start(
    tmp_path, capsys, predictor_args, args, expected
):
    code = main([*predictor_args, *args])
    line = _one_error_line(capsys)
    assert code == EXIT_USAGE and line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "exp" / "predictor").exists()


def _finished_ctx(tmp_path: Path, best: bool, **cfg) -> SimpleNamespace:
    out = tmp_path / "out"
    (out / "best").mkdir(parents=True) if best else out.mkdir(parents=True)
    return SimpleNamespace(
        cfg=TrainConfig(train_type="predictor", **cfg),
        output_dir=out,
        preempted=False,
        stop_reason="max_steps",
        global_step=4,
        epoch=0,
        strategy=SimpleNamespace(metric_name="val_loss"),
        best_metric=0.25 if best else None,
        best_step=4 if best else None,
        last_val_step=4,
    )


def test_the_summary_says_why_there_is_no_best_model(tmp_path):
    """Validation ran but the metric was never defined: not "no validation ran"."""
    ctx = _finished_ctx(tmp_path, best=False, best_metric="val_mae", forecast_val_origins=8)
    text = describe_results(ctx)
    assert "no validation ran" not in text
    assert "none (validation ran, but never gave a defined, finite val_mae)" in text
    ctx.last_val_step = None
    assert "none (no validation ran)" in describe_results(ctx)


def test_the_summary_names_the_metric_that_chose_best(tmp_path):
    ctx = _finished_ctx(tmp_path, best=True, best_metric="val_mae", forecast_val_origins=8)
    assert "(val_mae 0.25 at step 4)" in describe_results(ctx)


# ------------------------------------------------------------- README: next line, parameter counts


def test_the_next_line_of_a_resumed_run_has_no_null_flag_and_runs(tmp_path, capsys):
    out = tmp_path / "exp" / "tokenizer"
    assert _train(tmp_path, "--max_steps=2", "--strategy=tokenizer_recon") == 0
    capsys.readouterr()
    assert _train(tmp_path, "--max_steps=3", f"--resume={out}") == 0
    stdout = capsys.readouterr().out
    (line,) = [x for x in stdout.splitlines() if x.startswith("next: ")]
    assert not re.search(r"=(null|none)\b", line, flags=re.IGNORECASE), line
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["resume"] is None  # the run, not where this invocation continued from
    words = line.removeprefix("next: python scripts/train.py ").replace("--config ", "--config=")
    assert main([*words.split(), "--max_steps=1", "--device=cpu"]) == 0, capsys.readouterr().err
    assert (tmp_path / "exp" / "predictor" / "best").is_dir()


@pytest.mark.parametrize("method", ["full", "freeze", "lora"])
def test_every_finetune_method_says_what_it_trains(tmp_path, caplog, method):
    """Before: a LoRA or freeze run did not say how many parameters it trains."""
    if method == "lora":
        pytest.importorskip("peft")
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="kronos_engine")
    code = _train(tmp_path, f"--output_dir={out}", "--max_steps=1", f"--finetune_method={method}")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    total = sum(p.numel() for p in build_tokenizer("tiny").parameters())
    trainable = summary["trainable_params"]
    if method == "full":
        assert summary["all_params"] == trainable == total
    elif method == "freeze":
        assert summary["all_params"] == total and 0 < trainable < total
    else:  # the adapters are added to the base
        assert summary["all_params"] == total + trainable and 0 < trainable < total
    share = 100 * trainable / summary["all_params"]
    expected = (
        f"trainable params: {trainable:,d} || all params: {summary['all_params']:,d} || "
        f"trainable%: {share:.4f}"
    )
    assert expected in caplog.messages
