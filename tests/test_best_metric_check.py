"""`best_metric` must name a metric the run's validation logs: a typo is refused before any
work (it used to stop the run at its first validation, maybe hours in), unless a plug-in that
could add the metric does not say its names; then the first validation still refuses it."""

from __future__ import annotations

import json

import pytest
import yaml
from engine_helpers import run, save_random_tokenizer, tiny_cfg
from sweep_helpers import sweep_config

from kronos_engine import TrainCallback
from kronos_engine.cli.sweep import main as sweep_main
from kronos_engine.cli.train import main as train_main
from kronos_engine.errors import ConfigError
from kronos_engine.registry import STRATEGIES

RECON = STRATEGIES.get("tokenizer_recon")


class UnsaidRecon(RECON):
    """A user strategy that does not say what its validation logs."""

    val_metric_names = None


class Sharpe(TrainCallback):
    """A user callback that adds a validation metric before selection and says so."""

    role = "validation_metrics"
    val_metric_names = ("val_sharpe",)

    def on_validation_end(self, ctx) -> None:
        ctx.val_metrics["val_sharpe"] = -ctx.val_metrics["val_recon_mse"]


class UnsaidSharpe(Sharpe):
    val_metric_names = None


def test_a_typo_is_refused_before_the_run_with_a_hint(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    cfg = tiny_cfg(tmp_path, train_type="predictor", tokenizer_path=str(tok), best_metric="val_los")
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    message = str(caught.value)
    assert message.startswith("best_metric: 'val_los' is not a validation metric of this run")
    assert "'val_s1_loss'" in message and message.endswith("did you mean 'val_loss'?")
    assert not cfg.resolved_output_dir.exists()  # refused before the run folder


def test_the_forecast_metrics_count_only_with_forecast_validation(tmp_path):
    """A tokenizer logs its reconstruction error; `val_loss` is the predictor's."""
    with pytest.raises(ConfigError, match=r"'val_loss' .* logs \['val_recon_mse', 'val_samples'\]"):
        run(tiny_cfg(tmp_path, best_metric="val_loss"))


def test_every_name_the_validation_logs_is_accepted(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    ctx = run(
        tiny_cfg(
            tmp_path, train_type="predictor", tokenizer_path=str(tok), best_metric="val_s2_loss"
        )
    )
    assert ctx.best_step is not None and ctx.best_metric == pytest.approx(
        min(r["val_s2_loss"] for r in _val_records(ctx.cfg.resolved_output_dir))
    )


def test_a_callback_that_names_its_metric_can_be_selected_on(tmp_path):
    ctx = run(tiny_cfg(tmp_path, best_metric="val_sharpe", best_mode="max"), Sharpe())
    sharpe = [r["val_sharpe"] for r in _val_records(ctx.cfg.resolved_output_dir)]
    assert ctx.best_metric == pytest.approx(max(sharpe))
    with pytest.raises(ConfigError, match="did you mean 'val_sharpe'"):
        run(tiny_cfg(tmp_path / "b", best_metric="val_sharpee", best_mode="max"), Sharpe())


def test_unsaid_names_leave_the_check_to_the_first_validation(tmp_path):
    """A callback or strategy that does not say what it logs may add the metric: the run
    starts, and the first validation refuses a name it did not log."""
    ctx = run(tiny_cfg(tmp_path, best_metric="val_sharpe", best_mode="max"), UnsaidSharpe())
    assert ctx.best_step is not None
    strategy = f"{__name__}:UnsaidRecon"
    cfg = tiny_cfg(tmp_path / "b", strategy=strategy, best_metric="val_los", max_steps=2)
    with pytest.raises(ConfigError, match="'val_los' is not a validation metric of this run"):
        run(cfg)
    assert cfg.resolved_output_dir.exists()  # it got as far as the first validation


def test_train_py_says_it_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--train_type=tokenizer", "--data_source=demo", "--best_metric=val_recon"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "did you mean 'val_recon_mse'?" in err[0], err
    assert not (tmp_path / "outputs").exists()


def test_a_sweep_objective_typo_is_refused_before_any_trial(tmp_path, capsys):
    config = sweep_config(tmp_path, n_trials=2, objective="val_recon_mae")
    assert sweep_main([f"--config={config}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'val_recon_mae' is not a validation metric" in err[0], err
    assert not (tmp_path / "exp").exists()
    assert yaml.safe_load(config.read_text())["sweep"]["objective"] == "val_recon_mae"


def _val_records(output_dir) -> list[dict]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("type") == "val"]
