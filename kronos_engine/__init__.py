"""kronos-engine: one callback-driven trainer for the Kronos tokenizer and predictor."""

from kronos_engine.builder import TrainContextBuilder
from kronos_engine.callback import TrainCallback
from kronos_engine.config import ConfigError, TrainConfig
from kronos_engine.context import TrainContext
from kronos_engine.forecasting import KronosPredictor
from kronos_engine.registry import CALLBACKS, STRATEGIES
from kronos_engine.strategy import StepOutput, Strategy, ValOutput
from kronos_engine.trainer import Trainer

__all__ = [
    "CALLBACKS",
    "STRATEGIES",
    "ConfigError",
    "KronosPredictor",
    "StepOutput",
    "Strategy",
    "TrainCallback",
    "TrainConfig",
    "TrainContext",
    "TrainContextBuilder",
    "Trainer",
    "ValOutput",
]
