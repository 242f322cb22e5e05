"""Shared builders for engine tests: tiny configs on the demo data, runs and weight snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kronos_engine import TrainConfig, TrainContextBuilder, Trainer
from kronos_engine.callback import TrainCallback


def tiny_cfg(tmp_path: Path, **overrides: Any) -> TrainConfig:
    """A config that trains the tiny preset on 2 demo symbols in well under a second."""
    values: dict[str, Any] = {
        "train_type": "tokenizer",
        "exp_dir": str(tmp_path / "exp"),
        "data_source": "demo",
        "demo_symbols": 2,
        "demo_length": 200,
        "lookback_window": 20,
        "predict_window": 4,
        "train_samples_per_epoch": 48,
        "val_samples": 20,
        "batch_size": 8,
        "epochs": 2,
        "model_preset": "tiny",
        "progress_bar": False,
        "log_interval": 1,
        "seed": 7,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


def run(cfg: TrainConfig, *callbacks: TrainCallback, splits: Any = None):
    builder = TrainContextBuilder(cfg).with_callbacks(*callbacks)
    if splits is not None:
        builder.with_data(splits)
    ctx = builder.build()
    Trainer(ctx).fit()
    return ctx


def weights(ctx) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ctx.unwrapped_model.state_dict().items()}


def save_random_tokenizer(path: Path, seed: int = 0) -> Path:
    """A tiny tokenizer directory for predictor runs (no reference files needed)."""
    from kronos_engine.models import build_tokenizer

    torch.manual_seed(seed)
    build_tokenizer("tiny").save_pretrained(path)
    return path


def tiny_demo_predictor(root: Path) -> Path:
    """The exp_dir of a tiny predictor fine-tuned for 2 steps on 4 demo symbols (on a random
    tokenizer): something for evaluate.py to score."""
    cfg = tiny_cfg(
        root,
        train_type="predictor",
        demo_symbols=4,
        tokenizer_path=str(save_random_tokenizer(root / "tok")),
        max_steps=2,
        epochs=1,
    )
    run(cfg)
    return Path(cfg.exp_dir)


class Recorder(TrainCallback):
    """Records every hook call as (hook, global_step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.losses: list[float] = []

    def _rec(self, name: str, ctx) -> None:
        self.calls.append((name, ctx.global_step))

    def on_train_begin(self, ctx):
        self._rec("on_train_begin", ctx)

    def on_epoch_begin(self, ctx):
        self._rec("on_epoch_begin", ctx)

    def on_batch_begin(self, ctx, batch):
        self._rec("on_batch_begin", ctx)

    def on_batch_end(self, ctx, output):
        self._rec("on_batch_end", ctx)

    def on_optimizer_step(self, ctx):
        self._rec("on_optimizer_step", ctx)

    def on_step_end(self, ctx):
        self._rec("on_step_end", ctx)
        self.losses.append(ctx.last_loss)

    def on_validation_end(self, ctx):
        self._rec("on_validation_end", ctx)

    def on_epoch_end(self, ctx):
        self._rec("on_epoch_end", ctx)

    def on_train_end(self, ctx):
        self._rec("on_train_end", ctx)

    def on_error(self, ctx, error):
        self._rec("on_error", ctx)


def evaluated_qlib_experiment(root: Path) -> dict[str, Any]:
    """8 demo symbols as a Qlib provider under `root`, and the drift/naive forecasts of its test
    split written by the evaluation into `<root>/exp/eval` (what `scripts/backtest.py` trades)."""
    from kronos_engine.data import build_datasets, generate_demo_frames, write_qlib_provider
    from kronos_engine.evaluation.baselines import DriftForecaster, NaiveForecaster
    from kronos_engine.evaluation.origins import plan_origins
    from kronos_engine.evaluation.report import write_evaluation
    from kronos_engine.evaluation.rolling import ForecastOptions

    frames = generate_demo_frames(8, 300, "day", seed=3)
    provider = write_qlib_provider(frames, root / "provider", "day")
    cfg = TrainConfig.from_dict(
        dict(
            train_type="predictor",
            data_source="qlib",
            data_path=str(provider),
            lookback_window=20,
            predict_window=5,
            split_ratios=[0.6, 0.2, 0.2],
        )
    )
    store = build_datasets(cfg).test.store
    forecasters = {"drift": DriftForecaster(), "naive": NaiveForecaster()}
    opts = ForecastOptions(pred_len=5, lookback=20)
    exp = root / "exp"
    origins = plan_origins(store, 20, 5)
    write_evaluation(store, origins, forecasters, opts, exp / "eval", {}, False, False)
    return {"exp": exp, "provider": provider, "frames": frames}


def only_error_line(capsys) -> str:
    """The one `error:` line a command printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]
