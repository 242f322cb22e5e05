"""The run folder's layout (`RunLayout` names every file of a run) and its atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from engine_helpers import run, save_random_tokenizer, tiny_cfg

from kronos_engine import fsio
from kronos_engine import layout as layout_names
from kronos_engine import run as run_dir
from kronos_engine.config.loading import write_config
from kronos_engine.errors import CheckpointWriteError
from kronos_engine.fsio import atomic_write, atomic_write_text, tmp_file_for, write_dir_atomically
from kronos_engine.layout import RunLayout, experiment_tokenizer, stage_run
from kronos_engine.run.checkpoints import list_checkpoints, verify_checkpoint


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_layout_names_every_file_of_a_run(tmp_path):
    layout = RunLayout(tmp_path / "run")
    assert layout.root == tmp_path / "run"
    assert layout.best == tmp_path / "run" / "best"
    assert layout.checkpoints == tmp_path / "run" / "checkpoints"
    assert layout.metrics == tmp_path / "run" / "metrics.jsonl"
    assert layout.summary == tmp_path / "run" / "summary.json"
    assert layout.config == tmp_path / "run" / "config.yaml"
    assert layout.frozen_tokenizer == tmp_path / "run" / "frozen_tokenizer"
    assert layout.lock == tmp_path / "run" / ".lock"
    assert RunLayout(str(tmp_path)).root == tmp_path  # a str root is a Path
    assert stage_run(tmp_path, "predictor") == RunLayout(tmp_path / "predictor")
    assert experiment_tokenizer(tmp_path) == tmp_path / "tokenizer" / "best"


def test_experiment_tokenizer_is_the_configs_default(tmp_path):
    cfg = tiny_cfg(tmp_path, train_type="predictor")
    assert cfg.resolved_tokenizer_path == str(experiment_tokenizer(cfg.exp_dir))


def test_previous_run_outputs_and_clearing_follow_the_layout(tmp_path):
    layout = RunLayout(tmp_path)
    layout.best.mkdir()
    layout.metrics.write_text("{}\n")
    layout.config.write_text("seed: 1\n")
    assert run_dir.previous_run_outputs(tmp_path) == ["best", "metrics.jsonl"]
    run_dir.clear_previous_run(tmp_path)
    assert run_dir.previous_run_outputs(tmp_path) == []
    assert layout.config.read_text() == "seed: 1\n"  # replaced by the new run's, not removed


RENAMED = {
    "BEST_DIR": "top",
    "CHECKPOINTS_DIR": "ckpts",
    "METRICS_FILE": "log.jsonl",
    "SUMMARY_FILE": "end.json",
    "CONFIG_FILE": "run.yaml",
    "FROZEN_TOKENIZER_DIR": "tok",
}


def test_every_run_file_lands_where_the_layout_says(tmp_path, monkeypatch):
    """Renaming the layout's entries moves every file a run writes: no module spells a run
    file's name itself."""
    for name, value in RENAMED.items():
        monkeypatch.setattr(layout_names, name, value)
    tokenizer = save_random_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "custom_root"
    cfg = tiny_cfg(
        tmp_path,
        train_type="predictor",
        tokenizer_path=str(tokenizer),
        output_dir=str(out),
        epochs=1,
        ckpt_interval=2,
        val_interval=3,
    )
    ctx = run(cfg)
    layout = RunLayout(out)
    assert layout.best == out / "top" and layout.metrics == out / "log.jsonl"
    assert set(p.name for p in out.iterdir()) == set(RENAMED.values())
    assert (layout.best / "best.json").is_file() and (layout.best / "config.json").is_file()
    assert (layout.frozen_tokenizer / "model.safetensors").is_file()
    assert yaml.safe_load(layout.config.read_text())["output_dir"] == str(out)
    summary = json.loads(layout.summary.read_text())
    assert summary["best_dir"] == str(layout.best) and summary["global_step"] == ctx.global_step
    assert [json.loads(line)["step"] for line in layout.metrics.read_text().splitlines()][0] == 1
    newest = list_checkpoints(layout.checkpoints)[-1]
    assert newest.name == f"step_{ctx.global_step}"
    assert (newest / "run.yaml").is_file()  # a checkpoint's config is named by the layout too
    verify_checkpoint(newest)
    # The run is found and continued through the same layout.
    assert run_dir.resumed_run_dir(out) == out
    assert run_dir.previous_run_outputs(out) == ["ckpts", "top", "log.jsonl", "end.json", "tok"]


# ---------------------------------------------------------------- atomic files


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert _tree(tmp_path) == {"summary.json"}


def test_a_failing_write_leaves_the_old_file_and_no_tmp(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("line 1\n")

    def write(fh):
        fh.write("half of the new ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, write)
    assert path.read_text() == "line 1\n"
    assert _tree(tmp_path) == {"metrics.jsonl"}


def test_a_failing_rename_leaves_no_tmp(tmp_path):
    target = tmp_path / "summary.json"
    target.mkdir()  # a folder in the way: the rename itself fails
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        atomic_write_text(target, "{}")
    assert not tmp_file_for(target).exists()
    assert (target / "keep").read_text() == "x"


def test_config_yaml_is_written_atomically(tmp_path):
    cfg = tiny_cfg(tmp_path)
    path = RunLayout(tmp_path).config
    write_config(path, cfg)
    assert yaml.safe_load(path.read_text()) == cfg.to_dict()
    before = path.read_bytes()

    class Unserializable:  # yaml.safe_dump fails on it after writing part of the mapping
        def to_dict(self):
            return {"seed": 1, "bad": object()}

    with pytest.raises(yaml.YAMLError):
        write_config(path, Unserializable())
    assert path.read_bytes() == before
    assert _tree(tmp_path) == {"config.yaml"}


def test_a_run_writes_its_config_yaml_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    real = fsio.atomic_write

    def recording(path, write):
        written.append(Path(path).name)
        real(path, write)

    monkeypatch.setattr(fsio, "atomic_write", recording)  # the one atomic writer
    ctx = run(tiny_cfg(tmp_path, epochs=1, val_interval=100))
    assert "config.yaml" in written  # the run's own and each checkpoint's
    assert written.count("config.yaml") == 1 + len(list_checkpoints(ctx.output_dir / "checkpoints"))
    assert {"summary.json", "config.yaml"} <= set(written)


# ---------------------------------------------------------------- atomic folders


def test_write_dir_atomically_replaces_a_folder(tmp_path):
    final = tmp_path / "best"
    write_dir_atomically(final, lambda d: (d / "a").write_text("1"))
    write_dir_atomically(final, lambda d: (d / "b").write_text("2"))
    assert _tree(tmp_path) == {"best", "best/b"}


def test_a_failing_folder_write_keeps_the_old_folder_and_no_tmp(tmp_path):
    final = tmp_path / "best"
    write_dir_atomically(final, lambda d: (d / "model.safetensors").write_text("old"))

    def fill(directory):
        (directory / "model.safetensors").write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointWriteError, match=r"best: not written.*No space left"):
        write_dir_atomically(final, fill)
    assert _tree(tmp_path) == {"best", "best/model.safetensors"}
    assert (final / "model.safetensors").read_text() == "old"
