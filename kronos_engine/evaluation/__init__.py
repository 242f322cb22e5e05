"""Everything that scores a model: the training-time validation pass (`validation`), forecast
metrics (`metrics`), baseline forecasters (`baselines`), rolling-origin evaluation (`rolling`)
and the written report (`report`).

`evaluate` and `EmptyValidationError` are re-exported so `from kronos_engine.evaluation import
evaluate` keeps working. The forecast modules are imported on use, not here: the trainer's
validation must not pull in pandas-heavy or plotting code.
"""

from .validation import EmptyValidationError, evaluate

__all__ = ["EmptyValidationError", "evaluate"]
