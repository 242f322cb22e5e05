"""Forecasting with a trained tokenizer and predictor: KV-cached generation, the public
`KronosPredictor` DataFrame API, and the `scripts/predict.py` command."""

from .errors import ForecastError
from .generation import auto_regressive_inference, generate
from .options import SamplingOptions
from .predictor import Forecast, KronosPredictor, quantile_column
from .runs import PredictorRun, find_predictor_run
from .sampling import filter_logits, sample_from_logits
from .timestamps import infer_future_stamps

__all__ = [
    "Forecast",
    "ForecastError",
    "KronosPredictor",
    "PredictorRun",
    "SamplingOptions",
    "auto_regressive_inference",
    "filter_logits",
    "find_predictor_run",
    "generate",
    "infer_future_stamps",
    "quantile_column",
    "sample_from_logits",
]
