"""`TrainContext`: the one object every callback sees; it holds the run's parts and counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from kronos_engine.callback import CallbackList
    from kronos_engine.config import TrainConfig
    from kronos_engine.strategy import Strategy
    from kronos_engine.training.executors import Executor


class StopReason(str, enum.Enum):
    """Why the loop stopped early; a callback may also pass its own string."""

    MAX_STEPS = "max_steps"
    EARLY_STOPPING = "early_stopping"
    SIGNAL = "signal"  # preempted: the run is resumable and the process exits 128 + signal

    def __str__(self) -> str:
        return self.value


@dataclass
class TrainContext:
    cfg: TrainConfig
    model: nn.Module
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    scheduler: Any
    executor: Executor
    callbacks: CallbackList
    train_loader: Any
    train_sampler: Any
    val_loader: Any = None
    output_dir: Path = Path("outputs")
    # schedule
    steps_per_epoch: int = 0
    total_steps: int = 0
    # counters (exactly restored on resume)
    epoch: int = 0
    global_step: int = 0
    epoch_consumed: int = 0  # samples this rank took in the current epoch
    total_samples: int = 0  # samples seen by all ranks since the start of the run
    skipped_steps: int = 0
    epoch_ended: bool = False  # True while on_epoch_end runs: a checkpoint then resumes next epoch
    # latest values, for callbacks (not saved by the core: the callback that sets one persists it
    # in its own state_dict and publishes it again in on_train_begin of a resumed run)
    last_loss: float | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    grad_norm: float | None = None
    lr: float | None = None
    samples_per_second: float | None = None
    val_metrics: dict[str, float] = field(default_factory=dict)  # set by validation
    last_val_step: int | None = None  # set by validation
    best_metric: float | None = None  # set by best_checkpoint
    best_step: int | None = None  # set by best_checkpoint
    # control flags any callback may set
    should_stop: bool = False
    stop_reason: StopReason | str | None = None
    stop_signal: int | None = None  # the signal number when a signal stopped the run
    skip_step: bool = False
    # scratch values of user callbacks (never saved, never read by the engine); prefix the keys
    # with the callback's name. State that must survive a resume belongs in `state_dict`.
    extra: dict[str, Any] = field(default_factory=dict)
    # the weights validation scores and best/ keeps when they are not the trained ones (EMA)
    eval_model: nn.Module | None = None

    @property
    def rank(self) -> int:
        return self.executor.rank

    @property
    def world_size(self) -> int:
        return self.executor.world_size

    @property
    def is_main(self) -> bool:
        return self.executor.is_main

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.executor.unwrap(self.model)

    @property
    def evaluated_model(self) -> nn.Module:
        """What validation runs and `best/` saves: `eval_model` if a callback set one, else the
        trained model (unwrapped)."""
        return self.eval_model if self.eval_model is not None else self.unwrapped_model

    @property
    def preempted(self) -> bool:
        """A signal stopped the run: it is resumable, and not finished."""
        return self.stop_signal is not None

    def request_stop(self, reason: StopReason | str, signal: int | None = None) -> None:
        self.should_stop = True
        self.stop_reason = self.stop_reason or reason
        if signal is not None:
            self.stop_signal = signal

    def counters(self) -> dict[str, Any]:
        """The loop's resume position and bookkeeping saved in checkpoints (JSON-serialisable).
        Callbacks save their own state (`TrainCallback.state_dict`)."""
        epoch, consumed = self.epoch, self.epoch_consumed
        if self.epoch_ended:
            epoch, consumed = epoch + 1, 0
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "epoch_consumed": consumed,
            "total_samples": self.total_samples,
            "skipped_steps": self.skipped_steps,
        }

    def load_counters(self, state: dict[str, Any]) -> None:
        for key in (*self.counters(), *LEGACY_COUNTERS):
            if key in state:
                setattr(self, key, state[key])


# Legacy: checkpoints written before callbacks saved their own state hold these callback values
# in `counters`. `load_counters` still restores them onto the context, and the owning callbacks
# (validation, best_checkpoint), finding no state of their own in such a checkpoint, adopt them
# from the context in `on_train_begin`. Checkpoints written now never contain them.
LEGACY_COUNTERS = ("best_metric", "best_step", "last_val_step", "val_metrics")
