"""Stop when the validation metric has not improved for `patience` validations."""

from __future__ import annotations

import logging
import math
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("early_stopping")
class EarlyStopping(TrainCallback):
    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_validations = 0

    def on_validation_end(self, ctx: TrainContext) -> None:
        metric = ctx.val_metrics.get(ctx.strategy.metric_name)
        if metric is None:
            return
        # A non-finite metric is never an improvement (NaN would otherwise become the best and
        # every later, finite metric would count as "no improvement").
        if math.isfinite(metric) and (self.best is None or metric < self.best - self.min_delta):
            self.best, self.bad_validations = metric, 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.patience:
            if ctx.is_main:
                log.info("early stopping: no improvement in %d validations", self.patience)
            ctx.request_stop("early_stopping")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.bad_validations = int(state.get("bad_validations", 0))
