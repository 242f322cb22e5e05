"""Forecasting with a trained tokenizer and predictor: KV-cached generation, the public
`KronosPredictor` DataFrame API, and the `scripts/predict.py` command."""

from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.generation import auto_regressive_inference, generate
from kronos_engine.forecasting.predictor import KronosPredictor, quantile_column
from kronos_engine.forecasting.sampling import filter_logits, sample_from_logits
from kronos_engine.forecasting.timestamps import infer_future_stamps
from kronos_engine.run.finished import PredictorRun, find_predictor_run

__all__ = [
    "ForecastError",
    "KronosPredictor",
    "PredictorRun",
    "auto_regressive_inference",
    "filter_logits",
    "find_predictor_run",
    "generate",
    "infer_future_stamps",
    "quantile_column",
    "sample_from_logits",
]
