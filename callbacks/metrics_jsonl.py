"""One JSON object per line in `<output_dir>/metrics.jsonl` (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.fsio import atomic_write_text
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS


def train_record(ctx: TrainContext, log_interval: int) -> dict[str, Any] | None:
    """The train record of this step, or None when it is not a logging step (every
    `log_interval` steps and step 1). The experiment trackers send the same records."""
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
    record = {"type": "val", "step": ctx.global_step, "epoch": ctx.epoch}
    record.update(ctx.val_metrics)
    record["best"] = ctx.best_metric
    return record


@CALLBACKS.register("metrics_jsonl")
class JSONLMetrics(TrainCallback):
    """Train records every `log_interval` steps (and the first), validation records always.

    Fields: `type` ("train"/"val"), `step`, `epoch`, `loss` and its parts, `lr`, `grad_norm`,
    `samples_per_s`, `samples`; validation records carry the strategy's metric and its parts.
    On resume, records past the resumed step (written by the interrupted run) are dropped so
    the file reads as one uninterrupted run.
    """

    role = "logging"

    def __init__(self, log_interval: int = 10) -> None:
        self.log_interval = log_interval
        self._fh = None

    def path(self, ctx: TrainContext) -> Path:
        return RunLayout(ctx.output_dir).metrics

    def on_train_begin(self, ctx: TrainContext) -> None:
        if not ctx.is_main:
            return
        path = self.path(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._truncate_after(path, ctx.global_step)
        self._fh = open(path, "a", encoding="utf-8")

    @staticmethod
    def _truncate_after(path: Path, step: int) -> None:
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def on_step_end(self, ctx: TrainContext) -> None:
        record = train_record(ctx, self.log_interval)
        if record is not None:
            self.write(record)

    def on_validation_end(self, ctx: TrainContext) -> None:
        self.write(val_record(ctx))

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def on_train_end(self, ctx: TrainContext) -> None:
        self._close()

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self._close()
