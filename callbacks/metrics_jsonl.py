"""One JSON object per line in `<output_dir>/metrics.jsonl` (rank 0 only): the sink of the
records `kronos_engine.metrics_records` builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kronos_engine.context import TrainContext
from kronos_engine.fsio import atomic_write_text
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.records import MetricsFeed


@CALLBACKS.register("metrics_jsonl")
class JSONLMetrics(MetricsFeed):
    """Train records every `log_interval` steps (and the first), validation records always.

    Fields: `type` ("train"/"val"), `step`, `epoch`, `loss` and its parts, `lr`, `grad_norm`,
    `samples_per_s`, `samples`; validation records carry the strategy's metric and its parts.
    On resume, records past the resumed step (written by the interrupted run) are dropped so
    the file reads as one uninterrupted run.
    """

    def __init__(self, log_interval: int = 10) -> None:
        super().__init__(log_interval)
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

    def log(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self, status: str) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
