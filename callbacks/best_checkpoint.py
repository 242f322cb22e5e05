"""Keep the model with the best validation metric in `<output_dir>/best/` (public layout): the
lowest strategy metric by default, or `best_metric` in `best_mode` (e.g. the highest
`val_rank_ic` of the forecast validation)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.config import FORECAST_VAL_METRICS
from kronos_engine.context import TrainContext
from kronos_engine.fsio import write_dir_atomically
from kronos_engine.layout import RunLayout
from kronos_engine.models.io import save_model
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.validation import improves, selection_metric, unknown_metric

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("best_checkpoint")
class BestCheckpoint(TrainCallback):
    """`best/` holds `config.json` + `model.safetensors` (loads in the public code),
    `best.json` with the step, epoch and metric, and what the strategy records beside it (a
    predictor: its tokenizer's fingerprint); it is replaced atomically. It saves the weights
    that were validated (`ctx.evaluated_model`: the EMA weights when `ema` is on)."""

    role = "selection"

    def __init__(self) -> None:
        # Saved in checkpoints; published as ctx.best_metric / ctx.best_step for the others.
        self.best_metric: float | None = None
        self.best_step: int | None = None

    def on_train_begin(self, ctx: TrainContext) -> None:
        if self.best_step is None:
            # A new run, or a checkpoint without this state (see context.LEGACY_COUNTERS).
            self.best_metric, self.best_step = ctx.best_metric, ctx.best_step
        ctx.best_metric, ctx.best_step = self.best_metric, self.best_step

    def on_validation_end(self, ctx: TrainContext) -> None:
        name, mode = selection_metric(ctx)
        metric = ctx.val_metrics.get(name)
        if metric is None and name.removeprefix("val_") not in FORECAST_VAL_METRICS:
            raise unknown_metric(name, ctx.val_metrics)
        if metric is None:  # a forecast metric undefined at this validation (e.g. no IC)
            if ctx.is_main:
                log.warning(
                    "step %d: %s is undefined; not a candidate for best/", ctx.global_step, name
                )
            return
        if not math.isfinite(metric):
            # NaN compares false with everything: it would become (and stay) the best.
            if ctx.is_main:
                log.warning(
                    "step %d: %s is %s; not a candidate for best/", ctx.global_step, name, metric
                )
            return
        if not improves(metric, self.best_metric, mode):
            return
        self.best_metric, self.best_step = metric, ctx.global_step
        ctx.best_metric, ctx.best_step = metric, ctx.global_step
        if ctx.is_main:
            self._write(ctx, name, metric)
        ctx.executor.barrier()

    def state_dict(self) -> dict[str, Any]:
        if self.best_step is None:
            return {}
        return {"best_metric": self.best_metric, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")

    def _write(self, ctx: TrainContext, name: str, metric: float) -> None:
        info = {"step": ctx.global_step, "epoch": ctx.epoch, "metric": name, "value": metric}

        def fill(tmp):
            save_model(ctx.evaluated_model, tmp)
            ctx.strategy.write_best_files(tmp)
            (tmp / "best.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

        write_dir_atomically(RunLayout(ctx.output_dir).best, fill)
