"""Per-stage settings (issue 20, item 5): a YAML's `tokenizer:` and `predictor:` sections
override any key for that stage of `scripts/pipeline.py` and of `scripts/train.py` for its
`train_type`; command-line flags win over both and apply to every stage; each stage's
`config.yaml` holds its resolved values; a bad key in a section is refused like any other."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from engine_helpers import only_error_line
from test_cli_pipeline import TINY_YAML
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.pipeline import load_pipeline_configs, pipeline_main
from kronos_engine.cli.train import load_config
from kronos_engine.cli.train import main as train_main
from kronos_engine.errors import ConfigError

TINY = TINY_YAML.replace("max_steps: 4", "max_steps: 3")  # the pipeline tests' tiny run

SECTIONS = TINY + textwrap.dedent(
    """\
    tokenizer:
      lr: 0.0003
      batch_size: 12
    predictor:
      lr: 0.00002
      epochs: 2
      batch_size: 10
    """
)


def _write(root: Path, text: str, name: str = "c.yaml") -> Path:
    path = root / name
    path.write_text(text)
    return path


_one_error = only_error_line


def test_pipeline_trains_each_stage_with_its_section(tmp_path, capsys):
    """The done-when: each stage's config.yaml reads back its own lr and epochs; the flag
    `--batch_size` wins over both sections (a flag applies to every stage)."""
    config = _write(tmp_path, SECTIONS)
    exp = tmp_path / "exp"
    code = pipeline_main([f"--config={config}", f"--exp_dir={exp}", "--batch_size=8"])
    assert code == 0, capsys.readouterr().err[-3000:]
    tok = yaml.safe_load((exp / "tokenizer" / "config.yaml").read_text())
    pred = yaml.safe_load((exp / "predictor" / "config.yaml").read_text())
    assert (tok["train_type"], tok["lr"], tok["epochs"]) == ("tokenizer", 0.0003, 1)
    assert (pred["train_type"], pred["lr"], pred["epochs"]) == ("predictor", 0.00002, 2)
    assert tok["batch_size"] == pred["batch_size"] == 8
    for stage in ("tokenizer", "predictor"):
        summary = yaml.safe_load((exp / stage / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 3


def test_a_flag_applies_to_both_stages_over_their_sections(tmp_path):
    config = _write(tmp_path, SECTIONS)
    stages, _ = load_pipeline_configs([f"--config={config}", "--lr=0.0005"])
    assert [cfg.lr for cfg in stages.values()] == [0.0005, 0.0005]
    stages, _ = load_pipeline_configs([f"--config={config}"])
    assert stages["tokenizer"].batch_size == 12 and stages["predictor"].batch_size == 10
    assert stages["tokenizer"].epochs == 1 and stages["predictor"].epochs == 2


@pytest.mark.parametrize(
    ("train_type", "lr", "batch_size"), [("tokenizer", 0.0003, 12), ("predictor", 0.00002, 10)]
)
def test_train_applies_the_section_of_its_train_type(tmp_path, train_type, lr, batch_size):
    config = _write(tmp_path, SECTIONS)
    cfg = load_config([f"--train_type={train_type}", f"--config={config}"])
    assert (cfg.lr, cfg.batch_size) == (lr, batch_size)
    cfg = load_config([f"--train_type={train_type}", f"--config={config}", "--batch_size=4"])
    assert cfg.batch_size == 4  # the flag wins over the section


def test_train_type_in_the_file_picks_its_section(tmp_path):
    config = _write(tmp_path, "train_type: predictor\n" + SECTIONS)
    assert load_config([f"--config={config}"]).lr == 0.00002


def test_unknown_keys_in_sections_are_named_at_once(tmp_path, capsys):
    """Both typos (in two sections) and a top-level one in one line, each with its hint; no
    file is written."""
    text = TINY.replace("epochs: 1", "epocs: 1") + "tokenizer:\n  lrr: 0.1\npredictor:\n"
    text += "  batch_sise: 4\n"
    config = _write(tmp_path, text)
    before = snapshot(tmp_path)
    assert train_main(["--train_type=tokenizer", f"--config={config}"]) == EXIT_USAGE
    line = _one_error(capsys)
    assert "3 unknown keys" in line, line
    assert "'epocs' (line 7; did you mean 'epochs'?)" in line
    assert "'tokenizer.lrr' (line 12; did you mean 'lr'?)" in line
    assert "'predictor.batch_sise' (line 14; did you mean 'batch_size'?)" in line
    _assert_untouched(before, snapshot(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokenizer:\n  train_type: predictor\n", "the tokenizer: section is that stage"),
        ("predictor: 3\n", "predictor: expected a mapping of the keys that differ"),
        ("predictor:\n  lr: 0.1\n  lr: 0.2\n", "key 'predictor.lr' appears twice"),
        ("predictor:\n  epochs: two\n", "epochs: expected an integer, got 'two'"),
        ("tokenizer:\n  lr: -1\n", "lr: must be > 0"),
    ],
)
def test_bad_sections_stop_with_one_line(tmp_path, capsys, text, message):
    config = _write(tmp_path, TINY + text)
    before = snapshot(tmp_path)
    assert pipeline_main([f"--config={config}", f"--exp_dir={tmp_path / 'exp'}"]) == EXIT_USAGE
    assert message in _one_error(capsys)
    _assert_untouched(before, snapshot(tmp_path))


def test_the_pipeline_stages_share_one_experiment(tmp_path):
    config = _write(tmp_path, TINY + "predictor:\n  exp_dir: elsewhere\n")
    with pytest.raises(ConfigError, match="exp_dir: the stages name different experiments"):
        load_pipeline_configs([f"--config={config}"])
