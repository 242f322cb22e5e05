"""Reading a finished run (`kronos_engine.run.finished`): its config.yaml is a plain mapping,
never rebuilt into a training config, so a run whose recorded config training would refuse
today (a key of another version, a `max_context` below its windows) still forecasts and is
still evaluated, on the bars training read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from kronos_engine.cli.evaluate import load_split
from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.config import TrainConfig, predictor_tokenizer
from kronos_engine.data import DataSpec, build_datasets, generate_demo_frames
from kronos_engine.errors import ForecastError
from kronos_engine.layout import RunLayout, stage_run
from kronos_engine.models import build_predictor, build_tokenizer
from kronos_engine.run.finished import (
    find_predictor_run,
    find_run_config,
    read_run_config,
)

LOOKBACK, PRED = 20, 4


def _train_config(root: Path, data: Path, **overrides) -> TrainConfig:
    values = dict(
        train_type="predictor", exp_dir=str(root / "exp"), data_source="csv", data_path=str(data),
        lookback_window=LOOKBACK, predict_window=PRED, split_ratios=[0.6, 0.2, 0.2], clip=4.0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory) -> dict:
    """A predictor run (random tiny models) whose config.yaml training would refuse: a key no
    version knows and a max_context below lookback + predict."""
    root = tmp_path_factory.mktemp("odd_run")
    data = root / "klines"
    data.mkdir()
    for symbol, frame in generate_demo_frames(2, 160, "day", seed=4).items():
        frame.to_csv(data / f"{symbol}.csv", index=False)
    layout = stage_run(root / "exp", "predictor")
    torch.manual_seed(0)
    build_tokenizer("tiny").save_pretrained(layout.frozen_tokenizer)
    build_predictor("tiny").save_pretrained(layout.best)
    cfg = _train_config(root, data)
    recorded = {**cfg.to_dict(), "max_context": 22, "a_key_of_another_version": [1, 2]}
    layout.config.write_text(yaml.safe_dump(recorded, sort_keys=False))
    with pytest.raises(ValueError):  # what training says of this config
        TrainConfig.from_dict(recorded)
    return {"root": root, "exp": root / "exp", "cfg": cfg, "recorded": recorded}


def test_the_reader_gives_the_runs_recorded_settings(odd_run):
    run = find_predictor_run(odd_run["exp"])
    assert run.run_dir == odd_run["exp"] / "predictor"
    assert run.predictor_dir == RunLayout(run.run_dir).best
    assert run.tokenizer_dir == RunLayout(run.run_dir).frozen_tokenizer
    assert run.config == odd_run["recorded"]
    assert (run.lookback_window, run.predict_window, run.clip) == (LOOKBACK, PRED, 4.0)
    spec = DataSpec.from_mapping(run.config)
    assert spec == DataSpec.from_mapping(dataclasses.asdict(odd_run["cfg"]))
    assert find_run_config(odd_run["exp"]) == find_run_config(run.run_dir) == run.config


def test_evaluate_reads_the_bars_training_read(odd_run):
    run = find_predictor_run(odd_run["exp"])
    trained = build_datasets(odd_run["cfg"]).test.store
    store = load_split(DataSpec.from_mapping(run.config), "test", LOOKBACK, PRED)
    assert store.symbols == trained.symbols
    assert np.array_equal(store.values, trained.values)
    assert np.array_equal(store.stamps, trained.stamps)
    wider = load_split(run.config, "test", LOOKBACK + 5, PRED)  # a mapping works too
    assert wider.values.shape[0] == trained.values.shape[0] + 5 * len(trained.symbols)


def test_a_run_training_would_refuse_still_forecasts(odd_run, tmp_path):
    out = tmp_path / "f.csv"
    code = predict_main(
        ["--exp_dir", str(odd_run["exp"]), "--top_k=1", "--device=cpu", f"--output={out}"]
    )
    assert code == 0
    table = pd.read_csv(out)
    assert table["symbol"].unique().tolist() == ["DEMO000", "DEMO001"]
    assert len(table) == 2 * PRED


def test_a_run_training_would_refuse_is_still_evaluated(odd_run, tmp_path):
    out = tmp_path / "eval"
    args = ["--exp_dir", str(odd_run["exp"]), "--max_origins=3", "--device=cpu", "--top_k=1"]
    code = evaluate_main([*args, "--no_plots", "--no_progress", f"--output={out}"])
    assert code == 0
    assert (out / "metrics.json").is_file()


def test_predict_data_flags_keep_the_training_configs_error_lines(odd_run, tmp_path, capsys):
    base = ["--exp_dir", str(odd_run["exp"]), "--device=cpu", f"--output={tmp_path / 'f.csv'}"]
    code = predict_main([*base, "--data_source=demo", f"--data_path={tmp_path}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: data_path: '{tmp_path}' is set but data_source is 'demo' (the built-in "
        "synthetic data); add --data_source=csv (or qlib) to train on it"
    )
    assert not (tmp_path / "f.csv").exists()


def _legacy_run(root: Path, config: dict) -> Path:
    """A run from before runs kept their tokenizer: best/ and config.yaml only."""
    layout = RunLayout(root / "run")
    torch.manual_seed(0)
    build_predictor("tiny").save_pretrained(layout.best)
    layout.config.write_text(yaml.safe_dump(config))
    return layout.root


@pytest.mark.parametrize("own_tokenizer", [False, True])
@pytest.mark.parametrize("recorded", ["tokenizer_path", "pretrained_tokenizer", "neither"])
def test_a_legacy_runs_tokenizer_follows_the_training_rule(tmp_path, recorded, own_tokenizer):
    exp = tmp_path / "exp"
    if own_tokenizer:
        (exp / "tokenizer" / "best").mkdir(parents=True)
    cfg = TrainConfig(train_type="predictor", exp_dir=str(exp))
    if recorded != "neither":
        setattr(cfg, recorded, str(tmp_path / "tok"))
    config = {**cfg.to_dict(), "a_key_of_another_version": 1}
    run = find_predictor_run(_legacy_run(tmp_path, config))
    assert run.tokenizer_dir == Path(predictor_tokenizer(cfg))


def test_a_run_without_a_config_or_a_kept_tokenizer_is_never_paired_by_guess(tmp_path):
    """Issue 19: such a best/ was paired with whatever lay at ./outputs/demo/tokenizer/best."""
    layout = RunLayout(tmp_path / "run")
    build_predictor("tiny").save_pretrained(layout.best)
    with pytest.raises(ForecastError, match="cannot tell which tokenizer its predictor"):
        find_predictor_run(layout.root)


def test_a_legacy_run_with_a_bad_tokenizer_key_is_one_line(tmp_path):
    root = _legacy_run(tmp_path, {"train_type": "predictor", "tokenizer_path": [1]})
    with pytest.raises(ForecastError) as err:
        find_predictor_run(root)
    assert str(err.value) == (
        f"{RunLayout(root).config}: tokenizer_path: expected a string, got [1]"
    )


def test_read_run_config_names_a_bad_file(tmp_path):
    assert read_run_config(tmp_path) == {}
    file = RunLayout(tmp_path).config
    file.write_text("- a\n- list\n")
    with pytest.raises(ForecastError, match="expected a mapping of config keys"):
        read_run_config(tmp_path)
    file.write_text("key: [unclosed\n")
    with pytest.raises(ForecastError, match="unreadable run config"):
        read_run_config(tmp_path)
    with pytest.raises(ForecastError, match="is a tokenizer run, not a predictor run"):
        file.write_text("train_type: tokenizer\n")
        RunLayout(tmp_path).best.mkdir()
        find_predictor_run(tmp_path)


def test_find_run_config_prefers_the_predictor_stage(tmp_path):
    RunLayout(tmp_path).config.write_text("train_type: tokenizer\n")
    assert find_run_config(tmp_path) == {"train_type": "tokenizer"}
    (tmp_path / "predictor").mkdir()
    stage_run(tmp_path, "predictor").config.write_text("train_type: predictor\n")
    assert find_run_config(tmp_path) == {"train_type": "predictor"}
