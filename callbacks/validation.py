"""Validation every `interval` optimizer steps and at each epoch end, reduced across ranks."""

from __future__ import annotations

import logging

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.evaluation import evaluate
from kronos_engine.registry import CALLBACKS

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("validation")
class ValidationCallback(TrainCallback):
    """Sets `ctx.val_metrics` and fires `on_validation_end` for the other callbacks."""

    role = "validation"

    def __init__(self, interval: int | None = None, at_epoch_end: bool = True) -> None:
        self.interval = interval
        self.at_epoch_end = at_epoch_end

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.interval and ctx.global_step % self.interval == 0:
            self.run(ctx)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if self.at_epoch_end and ctx.last_val_step != ctx.global_step:
            self.run(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        # Not after a signal: the checkpoint is written and the process should exit now; the
        # resumed run validates on the usual schedule, as an uninterrupted run would.
        if ctx.preempted:
            return
        if ctx.global_step > 0 and ctx.last_val_step != ctx.global_step:
            self.run(ctx)

    def run(self, ctx: TrainContext) -> None:
        if ctx.val_loader is None:
            return
        ctx.val_metrics = evaluate(ctx)
        ctx.last_val_step = ctx.global_step
        if ctx.is_main:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in ctx.val_metrics.items())
            log.info("step %d epoch %d validation: %s", ctx.global_step, ctx.epoch, shown)
        ctx.callbacks.fire("on_validation_end", ctx)
