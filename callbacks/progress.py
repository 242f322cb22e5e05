"""A tqdm progress bar over optimizer steps (rank 0)."""

from __future__ import annotations

from tqdm import tqdm

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS


@CALLBACKS.register("progress_bar")
class ProgressBar(TrainCallback):
    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, ctx: TrainContext) -> None:
        if ctx.is_main:
            self.bar = tqdm(total=ctx.total_steps, initial=ctx.global_step, unit="step")

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        post = {"epoch": ctx.epoch, "loss": f"{ctx.last_loss:.4f}", "lr": f"{ctx.lr:.2e}"}
        if ctx.val_metrics:
            post["val"] = f"{ctx.val_metrics.get(ctx.strategy.metric_name, float('nan')):.4f}"
        self.bar.set_postfix(post, refresh=False)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, ctx: TrainContext) -> None:
        self._close()

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self._close()
