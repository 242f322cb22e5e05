"""`<output_dir>/summary.json`: how the run ended, its counters and best result (rank 0)."""

from __future__ import annotations

import json
import time

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.fsio import atomic_write_text
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.finetune import parameter_counts


@CALLBACKS.register("summary")
class RunSummary(TrainCallback):
    role = "summary"

    def __init__(self) -> None:
        self.t0 = time.time()
        self.first_step = 0

    def on_train_begin(self, ctx: TrainContext) -> None:
        self.t0 = time.time()
        self.first_step = ctx.global_step

    def on_train_end(self, ctx: TrainContext) -> None:
        status = "stopped" if ctx.preempted else "completed"
        if ctx.global_step == self.first_step and self._keep_finished(ctx):
            return
        self._write(ctx, status, None)

    def _keep_finished(self, ctx: TrainContext) -> bool:
        """Resuming a run that had already finished trains nothing: its summary (stop reason,
        wall time) stays as the run wrote it, and the context reports the same reason."""
        path = RunLayout(ctx.output_dir).summary
        if not ctx.cfg.resume or not path.is_file():
            return False
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if previous.get("status") != "completed" or previous.get("global_step") != ctx.global_step:
            return False
        ctx.stop_reason = ctx.stop_reason or previous.get("stop_reason")
        return True

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self._write(ctx, "failed", f"{type(error).__name__}: {error}")

    def _write(self, ctx: TrainContext, status: str, error: str | None) -> None:
        if not ctx.is_main:
            return
        trainable, total = parameter_counts(ctx.unwrapped_model)
        summary = {
            "status": status,
            "stop_reason": ctx.stop_reason,
            "error": error,
            "train_type": ctx.cfg.train_type,
            "global_step": ctx.global_step,
            "epoch": ctx.epoch,
            "total_samples": ctx.total_samples,
            "skipped_steps": ctx.skipped_steps,
            "last_loss": ctx.last_loss,
            "val_metrics": ctx.val_metrics,
            "best_metric": ctx.best_metric,
            "best_step": ctx.best_step,
            "metric_name": ctx.cfg.best_metric or ctx.strategy.metric_name,
            "trainable_params": trainable,
            "all_params": total,
            "world_size": ctx.world_size,
            "wall_time_s": round(time.time() - self.t0, 3),
            "best_dir": str(RunLayout(ctx.output_dir).best),
        }
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(RunLayout(ctx.output_dir).summary, json.dumps(summary, indent=1))
