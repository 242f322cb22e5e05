"""Forecast metrics at every validation: does the model forecast better, not only score a lower
token cross-entropy?

At each validation (every `val_interval` steps, at epoch ends and at the end) the model being
trained forecasts a fixed set of validation origins through `KronosPredictor` with the run's
frozen tokenizer, the same way `scripts/evaluate.py` does, and the overall metrics are added to
`ctx.val_metrics` as `val_mae`, `val_rank_ic`, ... before `best/`, early stopping and
`metrics.jsonl` see them (so `best_metric: val_rank_ic` with `best_mode: max` works).

Cost is bounded by `forecast_val_origins`; the origins are all symbols on evenly spaced dates,
chosen once. Sampling uses its own seeded generator and the global RNG streams are forked, so
training, and an exact resume, are unaffected. Rank 0 forecasts and the values are all-reduced,
so every rank takes the same best/early-stopping decision.
"""

from __future__ import annotations

import logging
import math

import torch

from kronos_engine.callback import TrainCallback
from kronos_engine.config import FORECAST_VAL_METRICS
from kronos_engine.context import TrainContext
from kronos_engine.errors import ConfigError
from kronos_engine.forecasting.options import SamplingOptions, check_count
from kronos_engine.registry import CALLBACKS

log = logging.getLogger("kronos_engine")

MODEL = "model"


@CALLBACKS.register("forecast_validation")
class ForecastValidation(TrainCallback):
    """Adds `val_<metric>` forecast metrics to each validation record."""

    role = "validation_metrics"
    val_metric_names = tuple(f"val_{n}" for n in (*FORECAST_VAL_METRICS, "origins"))

    def __init__(self, origins: int = 256, sample_count: int = 1, batch_size: int = 64) -> None:
        # The forecasting rules, when the callback is built (before any step), not at the
        # first validation: the config keys' rules (`config.rules`) say the same.
        self.budget = check_count(origins, "forecast_val_origins")
        self.sampling = SamplingOptions.named("forecast_val_", sample_count=sample_count)
        self.sample_count = self.sampling.sample_count
        self.batch_size = check_count(batch_size, "forecast_validation batch_size")
        self._origins = None

    def on_train_begin(self, ctx: TrainContext) -> None:
        if getattr(ctx.strategy, "tokenizer", None) is None:
            raise ConfigError(
                "forecast_val_origins: the strategy has no frozen tokenizer to forecast with "
                "(use train_type predictor)"
            )

    def on_validation_end(self, ctx: TrainContext) -> None:
        names = [*FORECAST_VAL_METRICS, "origins"]
        values = [math.nan] * len(names)
        if ctx.is_main:
            overall = self.forecast(ctx)
            values = [overall.get(name, math.nan) for name in names]
        vector = torch.tensor(values, dtype=torch.float64, device=ctx.executor.device)
        if not ctx.is_main:
            vector.zero_()
        reduced = ctx.executor.all_reduce_sum(vector).tolist()
        found = {f"val_{n}": v for n, v in zip(names, reduced) if math.isfinite(v)}
        ctx.val_metrics.update(found)
        if ctx.is_main:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in found.items())
            log.info("step %d forecast validation: %s", ctx.global_step, shown)

    def forecast(self, ctx: TrainContext) -> dict[str, float]:
        """Overall metrics of the model on the fixed origins (naive alongside, for skill)."""
        from kronos_engine.evaluation.baselines import NaiveForecaster
        from kronos_engine.evaluation.origins import plan_origins, subset_by_date
        from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
        from kronos_engine.forecasting import KronosPredictor

        cfg = ctx.cfg
        store = ctx.val_loader.dataset.store
        if self._origins is None:
            every = plan_origins(store, cfg.lookback_window, cfg.predict_window)
            self._origins = subset_by_date(store, every, self.budget)
        if not len(self._origins):
            return {}
        predictor = KronosPredictor(
            ctx.evaluated_model,  # the EMA weights when ema is on, like validation
            ctx.strategy.tokenizer,
            device=ctx.executor.device,
            max_context=cfg.max_context,
            clip=cfg.clip,
            precision=cfg.precision,
        )
        opts = ForecastOptions(
            pred_len=cfg.predict_window,
            # as predict.py/evaluate.py read it: a model sees at most max_context bars
            lookback=min(cfg.lookback_window, cfg.max_context),
            sampling=self.sampling.with_seed(cfg.seed),
            batch_size=self.batch_size,
        )
        devices = [ctx.executor.device] if ctx.executor.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            forecasters = {MODEL: predictor, "naive": NaiveForecaster()}
            acc = run_rolling(store, self._origins, forecasters, opts, progress=False)
        return acc.overall()[MODEL]
