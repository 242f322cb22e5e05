"""The validation pass: exact global per-sample means from sums and counts across ranks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from kronos_engine.config import FORECAST_VAL_METRICS, TrainConfig
from kronos_engine.context import TrainContext
from kronos_engine.errors import ConfigError, EmptyValidationError, did_you_mean
from kronos_engine.evaluation.origins import plan_origins, subset_by_date

# Forecast metrics that correlate forecasts across symbols on each date (undefined with one).
CROSS_SECTIONAL = ("ic", "icir", "rank_ic", "rank_icir")


@torch.no_grad()
def evaluate(ctx: TrainContext) -> dict[str, float]:
    """Run the strategy's `validation_step` over `ctx.val_loader` on every rank and reduce.

    Ranks may hold different numbers of samples (no padded duplicates); the sums and counts are
    all-reduced so the result is the mean over exactly the validation set. Training RNG streams
    are left untouched so validation never changes what training does next.
    """
    model = ctx.eval_model if ctx.eval_model is not None else ctx.model
    strategy, executor = ctx.strategy, ctx.executor
    devices = [executor.device] if executor.device.type == "cuda" else []
    was_training = model.training
    with torch.random.fork_rng(devices=devices):
        model.eval()
        metric_sum = torch.zeros((), dtype=torch.float64, device=executor.device)
        part_sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in ctx.val_loader:
            batch = executor.to_device(batch)
            with executor.autocast():
                out = strategy.validation_step(model, batch, ctx)
            metric_sum += out.metric_sum.detach().to(torch.float64)
            for name, value in out.part_sums.items():
                prev = part_sums.get(name, torch.zeros_like(metric_sum))
                part_sums[name] = prev + value.detach().to(torch.float64)
            count += out.count
        model.train(was_training)
    names = sorted(part_sums)
    vector = torch.stack([metric_sum, *[part_sums[n] for n in names]])
    counts = torch.tensor([float(count)], dtype=torch.float64, device=executor.device)
    reduced = executor.all_reduce_sum(torch.cat([vector, counts]))
    total = int(reduced[-1].item())
    if total == 0:
        raise EmptyValidationError(
            "validation set is empty on every rank; widen val_time_range/split_ratios"
        )
    metrics = {strategy.metric_name: reduced[0].item() / total, "val_samples": float(total)}
    for i, name in enumerate(names, start=1):
        metrics[name] = reduced[i].item() / total
    return metrics


def selection_metric(ctx: TrainContext) -> tuple[str, str]:
    """The validation metric that picks `best/` and drives early stopping, and its mode
    (`min`: lower is better, `max`: higher): `best_metric`, else the strategy's metric."""
    return ctx.cfg.best_metric or ctx.strategy.metric_name, ctx.cfg.best_mode


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in `mode`; ties never do."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def check_metric_known(cfg: TrainConfig, strategy: Any, callbacks: Iterable[Any]) -> None:
    """Before any work: `best_metric` is a name this run's validation logs (the strategy's
    metric and parts, `val_samples`, the forecast metrics, what `validation_metrics` callbacks
    add), instead of a run that fails at its first validation, maybe hours in. Left to that
    validation when the strategy or such a callback does not say its names."""
    name = cfg.best_metric
    parts = getattr(strategy, "val_metric_names", None)
    if name is None or parts is None:
        return
    known = {"val_samples", getattr(strategy, "metric_name", "val_loss"), *parts}
    if cfg.forecast_val_origins:
        known.update(f"val_{n}" for n in FORECAST_VAL_METRICS)
    for callback in callbacks:
        if getattr(callback, "role", "user") != "validation_metrics":
            continue  # it runs after selection: best/ never sees what it adds
        added = getattr(callback, "val_metric_names", None)
        if added is None:
            return
        known.update(added)
    if name not in known:
        raise unknown_metric(name, known)


def unknown_metric(name: str, logged: Iterable[str]) -> ConfigError:
    """The one line for a `best_metric` the run's validation does not log (before the run,
    or at its first validation when a plug-in did not say its names)."""
    hint = did_you_mean(name, logged)
    return ConfigError(
        f"best_metric: '{name}' is not a validation metric of this run; it logs "
        f"{sorted(logged)}" + (f"; {hint}" if hint else "")
    )


def check_metric_defined(cfg: TrainConfig, splits: Any) -> None:
    """Once the data is built, before the model: a forecast `best_metric` that the forecast
    validation can never compute on this validation split is refused, instead of a run that
    completes with no `best/`. The origins are the ones the forecast validation forecasts
    (`plan_origins` + `subset_by_date`); IC needs two symbols on one of their dates, ICIR
    (a mean over a standard deviation of daily ICs) two such dates."""
    name = (cfg.best_metric or "").removeprefix("val_")
    if name not in FORECAST_VAL_METRICS or cfg.forecast_val_origins is None:
        return
    val = getattr(splits, "val", None)
    if val is None:
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' is computed on the validation split, and this "
            "data has none; give it one (split_ratios / val_time_range) or drop best_metric"
        )
    store = getattr(val, "store", None)
    if store is None:  # user-provided splits: nothing to plan from
        return
    origins = subset_by_date(
        store,
        plan_origins(store, cfg.lookback_window, cfg.predict_window),
        cfg.forecast_val_origins,
    )
    if not len(origins):
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' needs a forecast origin in the validation split, "
            f"and none of its symbols has lookback_window + predict_window = "
            f"{cfg.lookback_window + cfg.predict_window} rows there; widen the validation "
            "split or shorten the windows"
        )
    if name not in CROSS_SECTIONAL:
        return
    symbols = int(np.unique(origins.symbol).size)
    if symbols < 2:
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' is cross-sectional and needs at least 2 symbols "
            f"in the validation split; it has {symbols}; use more symbols or another "
            "best_metric (e.g. val_mae with best_mode min)"
        )
    _, counts = np.unique(store.stamps[origins.row], return_counts=True)
    wide, need = int((counts >= 2).sum()), 2 if name.endswith("icir") else 1
    if wide < need:
        what = "one forecast date" if need == 1 else "2 forecast dates"
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' needs at least 2 symbols on {what} of the "
            f"validation split; its {symbols} symbols share {wide} of its {counts.size} dates "
            "(raise forecast_val_origins or align the symbols' dates)"
        )
