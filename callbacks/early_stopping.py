"""Stop when the validation metric (`best_metric` in `best_mode`, default the strategy's loss)
has not improved for `patience` validations."""

from __future__ import annotations

import logging
import math
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.context import StopReason, TrainContext
from kronos_engine.registry import CALLBACKS
from kronos_engine.training.validation import improves, selection_metric

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("early_stopping")
class EarlyStopping(TrainCallback):
    role = "selection"

    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_validations = 0

    def on_validation_end(self, ctx: TrainContext) -> None:
        name, mode = selection_metric(ctx)
        metric = ctx.val_metrics.get(name)
        # A missing (undefined forecast metric) or non-finite metric is never an improvement
        # (NaN would otherwise become the best and every later, finite metric would count as
        # "no improvement").
        if (
            metric is not None
            and math.isfinite(metric)
            and improves(metric, self.best, mode, self.min_delta)
        ):
            self.best, self.bad_validations = metric, 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.patience:
            if ctx.is_main:
                log.info("early stopping: no improvement in %d validations", self.patience)
            ctx.request_stop(StopReason.EARLY_STOPPING)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.bad_validations = int(state.get("bad_validations", 0))
