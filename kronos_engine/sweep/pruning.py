"""Inside a trial's training process: report each validation's objective to the trial, and stop
the run when the study's pruner says so.

The trial process is an ordinary `scripts/train.py` run (`cli.sweep.trial_main`) that gets this
callback; which trial it is comes in the environment (`TRIAL_ENV`, set by the sweep worker, and
passed on by the elastic launcher to every `--nprocs` rank). Rank 0 opens the study from its
storage and asks the pruner; the decision is all-reduced, so every rank stops at the same step.
A pruned run ends like an early-stopped one (`summary.json` says `stop_reason: pruned`, `best/`
holds its best model), and the worker records the trial as PRUNED.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext

log = logging.getLogger("kronos_engine")

TRIAL_ENV = "KRONOS_SWEEP_TRIAL"
PRUNED = "pruned"  # the run's stop_reason


@dataclass(frozen=True)
class TrialRef:
    """Which study and trial a training process reports to, and the pruner to ask."""

    storage: str
    study_name: str
    trial_id: int
    objective: str
    pruner: str
    pruner_settings: dict[str, Any]

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> TrialRef | None:
        raw = os.environ.get(TRIAL_ENV)
        return cls(**json.loads(raw)) if raw else None


class PruningCallback(TrainCallback):
    """Report `ctx.val_metrics[objective]` at each validation (step: `global_step`); stop the
    run with `stop_reason: pruned` when the pruner prunes the trial."""

    role = "selection"  # after the forecast metrics (validation_metrics), before the checkpoint

    def __init__(self, ref: TrialRef) -> None:
        self.ref = ref
        self._trial: Any = None

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            from kronos_engine.sweep.engine import make_pruner, open_storage

            storage = open_storage(self.ref.storage)
            pruner = make_pruner(self.ref.pruner, self.ref.pruner_settings)
            study = optuna.load_study(
                study_name=self.ref.study_name, storage=storage, pruner=pruner
            )
            self._trial = optuna.trial.Trial(study, self.ref.trial_id)
        return self._trial

    def on_validation_end(self, ctx: TrainContext) -> None:
        prune = 0.0
        value = ctx.val_metrics.get(self.ref.objective)
        if ctx.is_main and value is not None:
            trial = self._open()
            trial.report(float(value), ctx.global_step)
            prune = 1.0 if trial.should_prune() else 0.0
        decided = torch.tensor([prune], dtype=torch.float64, device=ctx.executor.device)
        if ctx.executor.all_reduce_sum(decided)[0].item() > 0:
            if ctx.is_main:
                log.info("sweep: the pruner stops this trial at step %d", ctx.global_step)
            ctx.request_stop(PRUNED)
