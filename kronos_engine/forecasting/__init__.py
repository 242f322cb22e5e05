"""Forecasting with a trained tokenizer and predictor: KV-cached generation, one
`SamplingOptions` value, the array-level core (`KronosPredictor.forecast_arrays`) and the public
`KronosPredictor` DataFrame API over it. A library: `scripts/predict.py` is `kronos_engine.cli`."""

from kronos_engine.errors import ForecastError
from kronos_engine.forecasting.forecast import Forecast, quantile_column
from kronos_engine.forecasting.generation import auto_regressive_inference, generate
from kronos_engine.forecasting.options import SamplingOptions
from kronos_engine.forecasting.predictor import KronosPredictor
from kronos_engine.forecasting.sampling import filter_logits, sample_from_logits
from kronos_engine.forecasting.timestamps import infer_future_stamps
from kronos_engine.run.finished import PredictorRun, find_predictor_run

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
