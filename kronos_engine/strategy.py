"""The loss-strategy interface: what a training/validation step computes for one batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from kronos_engine.config import TrainConfig
    from kronos_engine.context import TrainContext


@dataclass
class StepOutput:
    """One micro-batch: the loss to back-propagate (a batch mean) and detached parts to log."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ValOutput:
    """Validation sums (not means) so that ranks and batches reduce to an exact global mean."""

    metric_sum: torch.Tensor
    count: int
    part_sums: dict[str, torch.Tensor] = field(default_factory=dict)


class Strategy:
    """Builds the trained model and turns a batch into a loss.

    Subclasses implement `build_model`, `training_step` and `validation_step`; `setup` runs once
    the executor knows the device (for frozen helper models such as the predictor's tokenizer).
    """

    metric_name: str = "val_loss"
    # The other names `validation_step` logs (its `part_sums` keys), so a `best_metric` typo is
    # refused before the run; None: not said, checked at the first validation instead.
    val_metric_names: tuple[str, ...] | None = None
    # The train_type this strategy trains (None: any). A mismatch is a config error.
    train_type: str | None = None

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_model")

    def setup(self, ctx: TrainContext) -> None:
        """Called after the model is placed on the device, before training starts."""

    def write_run_files(self, output_dir: Path) -> None:
        """Record in the run folder what the run depends on beyond its own model (rank 0)."""

    def write_best_files(self, folder: Path) -> None:
        """Record beside a saved best model what using it depends on (rank 0; `folder` is the
        staging copy of `best/`)."""

    def training_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def validation_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> ValOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement validation_step")

    def batch_size_of(self, batch: Any) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])


def check_strategy_train_type(strategy: type | Strategy, name: str, train_type: str) -> None:
    """`--train_type=predictor --strategy=tokenizer_recon` would train a tokenizer and report a
    predictor: refuse it, naming both keys."""
    own = getattr(strategy, "train_type", None)
    if own is not None and own != train_type:
        from kronos_engine.errors import ConfigError

        raise ConfigError(
            f"strategy: '{name}' trains a {own}, but train_type is '{train_type}'; drop "
            f"--strategy (the default for {train_type} is used) or set train_type={own}"
        )
