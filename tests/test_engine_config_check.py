"""One gate: `kronos_engine.training.preflight.check` runs for the command line and for a Python user alike.

A config mistake that only a file, a package or a registry can reveal (unknown callback, a
strategy of the other train_type, a missing resume path, a predictor without tokenizer) fails
`TrainContextBuilder(cfg).build()` with the same ConfigError line the CLI prints, before any
data is built and without creating the output dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import kronos_engine.data as data_module
import kronos_engine.training.builder as builder_module
from kronos_engine.cli.shell import EXIT_USAGE
from kronos_engine.cli.train import main
from kronos_engine.config import TrainConfig
from kronos_engine.errors import ConfigError
from kronos_engine.training.builder import TrainContextBuilder
from kronos_engine.training.preflight import check

NEEDS_ARGS = """\
from kronos_engine.callback import TrainCallback


class NeedsArgs(TrainCallback):
    def __init__(self, every):
        self.every = every
"""


def _base(tmp_path: Path) -> dict[str, Any]:
    return {
        "exp_dir": str(tmp_path / "exp"),
        "demo_symbols": 2,
        "demo_length": 200,
        "lookback_window": 20,
        "predict_window": 4,
        "batch_size": 4,
        "max_steps": 1,
        "progress_bar": False,
    }


BAD = {
    "unknown_callback": (
        {"train_type": "tokenizer", "callbacks": ["no_such_callback"]},
        "callbacks: ",
    ),
    "strategy_of_other_train_type": (
        {"train_type": "tokenizer", "strategy": "predictor_next_token"},
        "strategy: ",
    ),
    "missing_resume": ({"train_type": "tokenizer", "resume": "RESUME"}, "resume: '"),
    "predictor_without_tokenizer": ({"train_type": "predictor"}, "tokenizer_path: no tokenizer at"),
    "callback_needs_arguments": (
        {"train_type": "tokenizer", "callbacks": ["needs_args_mod:NeedsArgs"]},
        "callbacks: 'needs_args_mod:NeedsArgs' cannot be created without arguments",
    ),
}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A fresh folder as cwd, a plug-in module on sys.path, and a data build that must not run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "needs_args_mod.py").write_text(NEEDS_ARGS)
    monkeypatch.syspath_prepend(str(tmp_path))

    def no_data(cfg):
        raise AssertionError("data was built before the config was checked")

    monkeypatch.setattr(data_module, "build_datasets", no_data)
    calls: list[str] = []

    def spy(cfg, **kwargs):
        calls.append(cfg.train_type)
        return check(cfg, **kwargs)

    monkeypatch.setattr(builder_module, "check", spy)
    return tmp_path, calls


def _values(tmp_path: Path, case: str) -> dict[str, Any]:
    values, _ = BAD[case]
    values = {**_base(tmp_path), **values}
    if values.get("resume") == "RESUME":
        values["resume"] = str(tmp_path / "nowhere")
    return values


def _argv(values: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in values.items():
        if isinstance(value, list):
            argv += [f"--{key}={item}" for item in value]
        else:
            argv.append(f"--{key}={str(value).lower() if isinstance(value, bool) else value}")
    return argv


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_builder_and_the_cli_fail_alike_before_any_work(world, case, capsys):
    tmp_path, calls = world
    values = _values(tmp_path, case)
    expected = BAD[case][1]

    with pytest.raises(ConfigError) as caught:
        TrainContextBuilder(TrainConfig.from_dict(values)).build()
    python_line = f"error: {' '.join(str(caught.value).split())}"
    assert expected in python_line
    assert not (tmp_path / "exp").exists()  # no output dir, no lock, no cache

    assert main(_argv(values)) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [python_line]  # the same line, word for word
    assert not (tmp_path / "exp").exists()
    assert calls == [values["train_type"]] * 2  # both paths went through the one check


def test_check_records_the_tokenizer_it_checked(tmp_path):
    """The predictor's tokenizer is resolved once: a fine-tuned tokenizer that appears later
    does not change the run's mind (or its config.yaml)."""
    exp = tmp_path / "exp"
    cfg = TrainConfig.from_dict(
        {"train_type": "predictor", "exp_dir": str(exp), "pretrained_tokenizer": "x/y"}
    )
    check(cfg, tokenizer_from_earlier_stage=True)
    assert cfg.tokenizer_path == str(exp / "tokenizer" / "best")

    other = TrainConfig.from_dict({"train_type": "predictor", "exp_dir": str(exp)})
    with pytest.raises(ConfigError, match="^tokenizer_path: no tokenizer at"):
        check(other)
    assert other.tokenizer_path is None  # nothing recorded for a config that failed
