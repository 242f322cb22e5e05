"""Resumable checkpoints every `interval` steps, at epoch ends, on a stop and at the end."""

from __future__ import annotations

import logging

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.resume import save_checkpoint

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("periodic_checkpoint")
class PeriodicCheckpoint(TrainCallback):
    role = "checkpoint"

    def __init__(self, interval: int | None = None, keep_last: int = 3) -> None:
        self.interval = interval
        self.keep_last = keep_last
        self.last_saved_step: int | None = None

    def on_step_end(self, ctx: TrainContext) -> None:
        due = self.interval is not None and ctx.global_step % self.interval == 0
        if due or ctx.preempted:
            self.save(ctx)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        # Saved while `ctx.epoch_ended` is set: resuming from it starts the next epoch.
        self.save(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        if ctx.global_step > 0 and self.last_saved_step != ctx.global_step:
            self.save(ctx)

    def save(self, ctx: TrainContext) -> None:
        path = save_checkpoint(ctx, RunLayout(ctx.output_dir).checkpoints, self.keep_last)
        self.last_saved_step = ctx.global_step
        if ctx.is_main:
            log.info("checkpoint written: %s", path)
