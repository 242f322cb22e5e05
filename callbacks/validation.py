"""Validation every `interval` optimizer steps and at each epoch end, reduced across ranks."""

from __future__ import annotations

import logging
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.validation import evaluate

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("validation")
class ValidationCallback(TrainCallback):
    """Sets `ctx.val_metrics` and `ctx.last_val_step` and fires `on_validation_end` for the
    other callbacks. Both are saved in checkpoints as this callback's state; the metrics dict is
    the one in the context, so metrics that `validation_metrics` callbacks add to it in place
    (forecast validation) are saved with it."""

    role = "validation"

    def __init__(self, interval: int | None = None, at_epoch_end: bool = True) -> None:
        self.interval = interval
        self.at_epoch_end = at_epoch_end
        self.last_step: int | None = None
        self.metrics: dict[str, float] = {}

    def on_train_begin(self, ctx: TrainContext) -> None:
        if self.last_step is None:
            # A new run, or a checkpoint without this state (see context.LEGACY_COUNTERS).
            self.last_step, self.metrics = ctx.last_val_step, ctx.val_metrics
        ctx.last_val_step, ctx.val_metrics = self.last_step, self.metrics

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.interval and ctx.global_step % self.interval == 0:
            self.run(ctx)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if self.at_epoch_end and self.last_step != ctx.global_step:
            self.run(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        # Not after a signal: the checkpoint is written and the process should exit now; the
        # resumed run validates on the usual schedule, as an uninterrupted run would.
        if ctx.preempted:
            return
        if ctx.global_step > 0 and self.last_step != ctx.global_step:
            self.run(ctx)

    def run(self, ctx: TrainContext) -> None:
        if ctx.val_loader is None:
            return
        ctx.val_metrics = self.metrics = evaluate(ctx)
        ctx.last_val_step = self.last_step = ctx.global_step
        if ctx.is_main:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in ctx.val_metrics.items())
            log.info("step %d epoch %d validation: %s", ctx.global_step, ctx.epoch, shown)
        ctx.callbacks.fire("on_validation_end", ctx)

    def state_dict(self) -> dict[str, Any]:
        if self.last_step is None:
            return {}
        return {"last_val_step": self.last_step, "val_metrics": self.metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state.get("last_val_step")
        self.metrics = dict(state.get("val_metrics", {}))
