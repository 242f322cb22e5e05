"""kronos-engine: one callback-driven trainer for the Kronos tokenizer and predictor.

A lazy face: `from kronos_engine import Trainer` (or the public habit `from kronos_engine import
Kronos, KronosTokenizer, KronosPredictor`) imports the training layer on first use, so
`import kronos_engine` (and `import kronos_engine.config`, which runs this file first) stays cheap
and loads no torch. The names and where they live are listed once, in `_EXPORTS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CALLBACKS": "kronos_engine.registry",
    "STRATEGIES": "kronos_engine.registry",
    "ConfigError": "kronos_engine.errors",
    "Kronos": "kronos_engine.models",
    "KronosPredictor": "kronos_engine.forecasting",
    "KronosTokenizer": "kronos_engine.models",
    "StepOutput": "kronos_engine.strategy",
    "Strategy": "kronos_engine.strategy",
    "TrainCallback": "kronos_engine.callback",
    "TrainConfig": "kronos_engine.config",
    "TrainContext": "kronos_engine.context",
    "TrainContextBuilder": "kronos_engine.training.builder",
    "Trainer": "kronos_engine.training.trainer",
    "ValOutput": "kronos_engine.strategy",
}

__all__ = [
    "CALLBACKS",
    "STRATEGIES",
    "ConfigError",
    "Kronos",
    "KronosPredictor",
    "KronosTokenizer",
    "StepOutput",
    "Strategy",
    "TrainCallback",
    "TrainConfig",
    "TrainContext",
    "TrainContextBuilder",
    "Trainer",
    "ValOutput",
]  # fmt: skip  (the keys of _EXPORTS; tests/test_layers.py keeps them equal)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kronos_engine' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from kronos_engine.callback import TrainCallback
    from kronos_engine.config import TrainConfig
    from kronos_engine.context import TrainContext
    from kronos_engine.errors import ConfigError
    from kronos_engine.forecasting import KronosPredictor
    from kronos_engine.models import Kronos, KronosTokenizer
    from kronos_engine.registry import CALLBACKS, STRATEGIES
    from kronos_engine.strategy import StepOutput, Strategy, ValOutput
    from kronos_engine.training.builder import TrainContextBuilder
    from kronos_engine.training.trainer import Trainer
