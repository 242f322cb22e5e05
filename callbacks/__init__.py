"""Built-in callbacks, registered by name in `kronos_engine.registry.CALLBACKS`."""

from kronos_engine.callbacks.activation_checkpointing import ActivationCheckpointing
from kronos_engine.callbacks.best_checkpoint import BestCheckpoint
from kronos_engine.callbacks.early_stopping import EarlyStopping
from kronos_engine.callbacks.ema import EMA
from kronos_engine.callbacks.forecast_validation import ForecastValidation
from kronos_engine.callbacks.graceful_stop import GracefulStop
from kronos_engine.callbacks.grad_clip import GradClipCallback
from kronos_engine.callbacks.metrics_jsonl import JSONLMetrics
from kronos_engine.callbacks.non_finite import NonFiniteGuard
from kronos_engine.callbacks.periodic_checkpoint import PeriodicCheckpoint
from kronos_engine.callbacks.progress import ProgressBar
from kronos_engine.callbacks.summary import RunSummary
from kronos_engine.callbacks.trackers import (
    CometTracker,
    MLflowTracker,
    TensorBoardTracker,
    WandbTracker,
)
from kronos_engine.callbacks.validation import ValidationCallback

from kronos_engine.errors import NonFiniteError

__all__ = [
    "ActivationCheckpointing",
    "BestCheckpoint",
    "EarlyStopping",
    "EMA",
    "ForecastValidation",
    "GracefulStop",
    "GradClipCallback",
    "JSONLMetrics",
    "NonFiniteError",
    "NonFiniteGuard",
    "PeriodicCheckpoint",
    "ProgressBar",
    "RunSummary",
    "CometTracker",
    "MLflowTracker",
    "TensorBoardTracker",
    "WandbTracker",
    "ValidationCallback",
]
