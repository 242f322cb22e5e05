"""The example configs in `configs/` stay loadable, and the public-checkpoint one really trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kronos_engine.cli.train import load_config
from kronos_engine.config import TrainConfig, read_yaml_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_the_documented_examples_exist():
    names = {p.name for p in CONFIGS}
    expected = {"demo.yaml", "finetune_csv.yaml", "finetune_qlib.yaml", "finetune_pretrained.yaml"}
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("train_type", ["tokenizer", "predictor"])
def test_every_config_loads_for_both_stages(path, train_type):
    cfg = load_config([f"--train_type={train_type}", f"--config={path}"])
    assert cfg.train_type == train_type
    raw = yaml.safe_load(path.read_text())
    assert raw, f"{path.name} is empty"
    for key, value in read_yaml_config(path).items():
        assert getattr(cfg, key) == value, key


def test_demo_yaml_spells_out_the_defaults():
    """Its header says so; a changed default must be changed there too."""
    defaults = TrainConfig()
    for key, value in read_yaml_config(REPO / "configs" / "demo.yaml").items():
        assert getattr(defaults, key) == value, f"demo.yaml {key}={value!r}, default differs"


def test_pretrained_configs_read_the_fine_tuned_tokenizer():
    """With pretrained_tokenizer set, a predictor would otherwise encode with the original."""
    for path in CONFIGS:
        cfg = load_config(["--train_type=predictor", f"--config={path}"])
        if cfg.pretrained_tokenizer:
            assert cfg.resolved_tokenizer_path == str(Path(cfg.exp_dir) / "tokenizer" / "best")


def test_finetune_pretrained_trains_from_public_layout_checkpoints(reference_dir, tmp_path):
    """configs/finetune_pretrained.yaml through the pipeline, with the reference tiny checkpoints
    (same folder layout as NeoQuasar/Kronos-*) in place of the downloaded ones."""
    exp_dir = tmp_path / "exp"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "pipeline.py"),
            f"--config={REPO / 'configs' / 'finetune_pretrained.yaml'}",
            f"--pretrained_tokenizer={reference_dir / 'tokenizer_tiny'}",
            f"--pretrained_predictor={reference_dir / 'predictor_tiny'}",
            f"--exp_dir={exp_dir}",
            f"--tokenizer_path={exp_dir / 'tokenizer' / 'best'}",
            "--demo_symbols=2",
            "--demo_length=300",
            "--max_steps=2",
            "--progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("tokenizer", "predictor"):
        summary = json.loads((exp_dir / stage / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 2
    # The fine-tuned predictor keeps the public config.json, so public code can load it.
    public = json.loads((reference_dir / "predictor_tiny" / "config.json").read_text())
    tuned = json.loads((exp_dir / "predictor" / "best" / "config.json").read_text())
    assert {k: tuned.get(k) for k in public} == public
