"""Built-in callbacks, registered by name in `kronos_engine.registry.CALLBACKS`."""

from callbacks.activation_checkpointing import ActivationCheckpointing
from callbacks.best_checkpoint import BestCheckpoint
from callbacks.early_stopping import EarlyStopping
from callbacks.ema import EMA
from callbacks.forecast_validation import ForecastValidation
from callbacks.graceful_stop import GracefulStop
from callbacks.grad_clip import GradClipCallback
from callbacks.metrics_jsonl import JSONLMetrics
from callbacks.non_finite import NonFiniteError, NonFiniteGuard
from callbacks.periodic_checkpoint import PeriodicCheckpoint
from callbacks.progress import ProgressBar
from callbacks.summary import RunSummary
from callbacks.trackers import CometTracker, MLflowTracker, TensorBoardTracker, WandbTracker
from callbacks.validation import ValidationCallback

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
