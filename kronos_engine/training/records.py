"""The metrics records of a run: the one builder of what `metrics.jsonl` holds and every
experiment tracker receives, and `MetricsFeed`, which hands each record to a sink.

A sink (`MetricsSink`: `log(record)` and `close(status)`, in the style of torchtune's
MetricLogger) subclasses `MetricsFeed`: the JSONL file and each tracker only say where a record
goes, never how it is built, so they cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from kronos_engine.callback import TrainCallback

if TYPE_CHECKING:
    from kronos_engine.context import TrainContext


def train_record(ctx: TrainContext, log_interval: int) -> dict[str, Any] | None:
    """The train record of this step, or None when it is not a logging step (every
    `log_interval` steps and step 1)."""
    if ctx.global_step % log_interval and ctx.global_step != 1:
        return None
    record = {"type": "train", "step": ctx.global_step, "epoch": ctx.epoch}
    record.update(ctx.last_metrics)
    record.update(
        lr=ctx.lr,
        grad_norm=ctx.grad_norm,
        samples_per_s=ctx.samples_per_second,
        samples=ctx.total_samples,
    )
    return record


def val_record(ctx: TrainContext) -> dict[str, Any]:
    """The record of the validation that just ended: its metrics and the best value so far."""
    record = {"type": "val", "step": ctx.global_step, "epoch": ctx.epoch}
    record.update(ctx.val_metrics)
    record["best"] = ctx.best_metric
    return record


class MetricsSink(Protocol):
    """Where the records go (rank 0; a sink that is not open ignores them)."""

    def log(self, record: dict[str, Any]) -> None: ...

    def close(self, status: str) -> None:
        """`status`: completed, stopped (signal; resumable) or failed."""


class MetricsFeed(TrainCallback):
    """Builds the records at the hooks they describe and hands them to `self.log`: a train
    record every `log_interval` steps (and at step 1), a validation record after every
    validation; `close` at the end of the run. Subclasses implement `MetricsSink`."""

    role = "logging"

    def __init__(self, log_interval: int = 10) -> None:
        self.log_interval = log_interval

    def log(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        raise NotImplementedError

    def on_step_end(self, ctx: TrainContext) -> None:
        record = train_record(ctx, self.log_interval)
        if record is not None:
            self.log(record)

    def on_validation_end(self, ctx: TrainContext) -> None:
        self.log(val_record(ctx))

    def on_train_end(self, ctx: TrainContext) -> None:
        self.close("stopped" if ctx.preempted else "completed")

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self.close("failed")
