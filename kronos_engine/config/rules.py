"""The value rules of `TrainConfig` that need no file: ranges, allowed values and combinations of
keys. `TrainConfig.validate` runs them; each failure is one `ConfigError` naming the key.

`resolve_device` is the device rule of every command and of the forecasting API (`--device`,
`device=`): the one place that says which devices this machine has."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

from kronos_engine.config.choices import (
    CHOICES,
    FINETUNE_METHODS,
    FORECAST_VAL_METRICS,
    LOGGERS,
    PREDICTOR_PRESETS,
    TOKENIZER_PRESETS,
)
from kronos_engine.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from kronos_engine.config.schema import TrainConfig


def validate(cfg: TrainConfig) -> None:
    """Check value ranges and combinations that do not need any file."""
    check_numbers(cfg)
    for key, allowed in CHOICES.items():
        value = getattr(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not allowed; choose one of {list(allowed)}")
    presets = TOKENIZER_PRESETS if cfg.train_type == "tokenizer" else PREDICTOR_PRESETS
    if cfg.model_preset not in presets:
        raise ConfigError(
            f"model_preset: '{cfg.model_preset}' is not a {cfg.train_type} preset; "
            f"choose one of {list(presets)}"
        )
    positive = ["lookback_window", "predict_window", "batch_size", "grad_accum_steps"]
    positive += ["epochs", "log_interval", "keep_last", "demo_symbols", "demo_length"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: must be >= 1, got {getattr(cfg, key)}")
    for key in ["max_steps", "val_interval", "ckpt_interval", "train_samples_per_epoch"]:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout: must lie in [0, 1) or be null, got {cfg.dropout}")
    for key in ["val_samples", "early_stopping_patience", "forecast_val_origins"]:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
    if cfg.forecast_val_sample_count < 1:
        raise ConfigError(
            f"forecast_val_sample_count: must be >= 1, got {cfg.forecast_val_sample_count}"
        )
    if cfg.forecast_val_origins is not None and cfg.train_type != "predictor":
        raise ConfigError(
            "forecast_val_origins: forecasts need a predictor; set it only with "
            "train_type predictor"
        )
    forecast_names = {f"val_{name}" for name in FORECAST_VAL_METRICS}
    if cfg.best_metric in forecast_names and cfg.forecast_val_origins is None:
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' is a forecast metric; set "
            "forecast_val_origins (e.g. 256) to compute it at each validation"
        )
    if cfg.best_mode == "max" and cfg.best_metric is None:
        raise ConfigError(
            "best_mode: 'max' needs best_metric (the default metric is a loss, lower is "
            "better); set best_metric, e.g. val_rank_ic"
        )
    if cfg.div_factor <= 0:
        raise ConfigError(f"div_factor: must be > 0, got {cfg.div_factor}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay: must be >= 0, got {cfg.weight_decay}")
    if cfg.max_grad_norm is not None and not cfg.max_grad_norm > 0:
        raise ConfigError(
            f"max_grad_norm: must be > 0 (use .inf to only measure the norm) or null for "
            f"the default, got {cfg.max_grad_norm}"
        )
    if cfg.num_workers < 0:
        raise ConfigError(f"num_workers: must be >= 0, got {cfg.num_workers}")
    if cfg.clip <= 0:
        raise ConfigError(f"clip: must be > 0, got {cfg.clip}")
    if cfg.lr is not None and cfg.lr <= 0:
        raise ConfigError(f"lr: must be > 0, got {cfg.lr}")
    if not (0.0 <= cfg.adam_beta1 < 1.0 and 0.0 <= cfg.adam_beta2 < 1.0):
        raise ConfigError("adam_beta1/adam_beta2: must lie in [0, 1)")
    if not 0.0 < cfg.warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio: must lie in (0, 1), got {cfg.warmup_ratio}")
    if len(cfg.split_ratios) != 3 or any(r < 0 for r in cfg.split_ratios):
        raise ConfigError("split_ratios: must be three non-negative numbers [train, val, test]")
    if abs(sum(cfg.split_ratios) - 1.0) > 1e-6:
        raise ConfigError(f"split_ratios: must sum to 1, got {cfg.split_ratios}")
    for key in ["train_time_range", "val_time_range", "test_time_range"]:
        value = getattr(cfg, key)
        if value is not None and len(value) != 2:
            raise ConfigError(f"{key}: must be [start, end], got {value}")
    if cfg.data_source == "demo" and cfg.data_path:
        raise ConfigError(
            f"data_path: '{cfg.data_path}' is set but data_source is 'demo' (the built-in "
            f"synthetic data); add --data_source=csv (or qlib) to train on it"
        )
    if cfg.data_source not in ("auto", "demo") and not cfg.data_path:
        raise ConfigError(f"data_path: required when data_source is '{cfg.data_source}'")
    if cfg.max_context < 1:
        raise ConfigError(f"max_context: must be >= 1, got {cfg.max_context}")
    validate_device(cfg)
    validate_toolbox(cfg)
    validate_market(cfg)
    validate_trackers(cfg)
    validate_forecast_metrics(cfg)


DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate_device(cfg: TrainConfig) -> None:
    """`device` names a device kind, or one GPU (`cuda:N`, the public `device_id`); whether this
    machine has it is `resolve_device`'s question, asked when the run starts."""
    if not DEVICE_NAME.fullmatch(str(cfg.device)):
        raise ConfigError(
            f"device: '{cfg.device}' is not allowed; choose one of auto, cpu, cuda, cuda:N "
            "(N: the GPU's index, e.g. cuda:1)"
        )


def long_window_note(cfg: TrainConfig) -> str | None:
    """The one warning of a window longer than `max_context` (None when it fits). Such windows
    train, as in the public code (lookback 512 + predict 48 with max_context 512): the rotary
    positions have no fixed length. A forecast sees at most the last `max_context` bars, so the
    note says what forecasting will read."""
    span = cfg.lookback_window + cfg.predict_window
    if span <= cfg.max_context:
        return None
    note = (
        f"lookback_window + predict_window = {span} exceeds max_context {cfg.max_context}: "
        f"training reads these {span}-bar windows as asked (the model's rotary positions have "
        f"no fixed length, as in the public code), but a forecast sees at most the last "
        f"{cfg.max_context} bars (history and generated bars together)"
    )
    if cfg.lookback_window > cfg.max_context:
        note += (
            f"; forecast with --lookback {cfg.max_context} (or less) in predict.py and "
            f"evaluate.py, and forecast validation reads the last {cfg.max_context} bars of "
            f"each history"
        )
    return note


def validate_market(cfg: TrainConfig) -> None:
    """The keys of the market sources (`sina`, `ccxt`): the exchange, URLs, fetch pacing."""
    if cfg.data_source == "ccxt" and not cfg.exchange:
        raise ConfigError(
            "exchange: required when data_source is 'ccxt'; name a ccxt exchange id such as "
            "binance, okx or bybit"
        )
    if cfg.exchange and cfg.data_source != "ccxt":
        raise ConfigError(
            f"exchange: '{cfg.exchange}' is set but data_source is '{cfg.data_source}'; set "
            "data_source: ccxt to fetch from it"
        )
    for key in ("sina_url", "exchange_api_url"):
        value = getattr(cfg, key)
        if value is not None and not str(value).startswith(("http://", "https://")):
            raise ConfigError(f"{key}: '{value}' is not an http:// or https:// URL")
    if not cfg.fetch_timeout > 0:
        raise ConfigError(f"fetch_timeout: must be > 0 seconds, got {cfg.fetch_timeout}")
    for key in ("fetch_retries", "fetch_backoff", "fetch_interval"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {getattr(cfg, key)}")


def validate_toolbox(cfg: TrainConfig) -> None:
    """Ranges of the fine-tuning toolbox keys (label smoothing, schedules, LoRA, EMA, ...)."""
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing: must lie in [0, 1), got {cfg.label_smoothing}")
    if cfg.sgdr_cycle_steps is not None and cfg.sgdr_cycle_steps < 1:
        raise ConfigError(f"sgdr_cycle_steps: must be >= 1 or null, got {cfg.sgdr_cycle_steps}")
    if cfg.sgdr_cycle_mult < 1:
        raise ConfigError(f"sgdr_cycle_mult: must be >= 1, got {cfg.sgdr_cycle_mult}")
    if cfg.finetune_method not in FINETUNE_METHODS:
        raise ConfigError(
            f"finetune_method: '{cfg.finetune_method}' is not allowed; "
            f"choose one of {list(FINETUNE_METHODS)}"
        )
    if cfg.lora_r < 1 or cfg.lora_alpha <= 0:
        raise ConfigError(
            f"lora_r, lora_alpha: must be >= 1 and > 0, got {cfg.lora_r}, {cfg.lora_alpha}"
        )
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise ConfigError(f"lora_dropout: must lie in [0, 1), got {cfg.lora_dropout}")
    if not 0.0 < cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay: must lie in (0, 1), got {cfg.ema_decay}")
    for name in cfg.loggers:
        if name not in LOGGERS:
            raise ConfigError(f"loggers: '{name}' is not allowed; choose from {list(LOGGERS)}")
    if cfg.tracking_mode not in ("online", "offline"):
        raise ConfigError(
            f"tracking_mode: '{cfg.tracking_mode}' is not allowed; choose one of "
            "['online', 'offline']"
        )
    if not 0.0 <= cfg.wsd_decay_ratio <= 1.0:
        raise ConfigError(f"wsd_decay_ratio: must lie in [0, 1], got {cfg.wsd_decay_ratio}")


def validate_trackers(cfg: TrainConfig) -> None:
    """A tracker or callback listed twice would run twice (two tracked runs, every record sent
    twice); `tracking_uri` only reaches MLflow, so without it the value would be dropped."""
    for key in ("loggers", "callbacks"):
        seen: set[str] = set()
        for name in getattr(cfg, key):
            if name in seen:
                raise ConfigError(f"{key}: '{name}' is listed twice; list each once")
            seen.add(name)
    both = [name for name in cfg.callbacks if name in LOGGERS and name in cfg.loggers]
    if both:
        raise ConfigError(
            f"callbacks: '{both[0]}' is also in loggers, so it would run twice; list it only "
            "in loggers"
        )
    if cfg.tracking_uri is not None and "mlflow" not in cfg.loggers:
        raise ConfigError(
            f"tracking_uri: '{cfg.tracking_uri}' is only read by the mlflow logger, and loggers "
            f"is {cfg.loggers}; add mlflow to loggers or drop tracking_uri"
        )


# Forecast metrics computed from sample paths: undefined with one path per origin.
SAMPLED_METRICS = ("crps", "coverage_80", "coverage_90")


def validate_forecast_metrics(cfg: TrainConfig) -> None:
    """A `best_metric` the forecast validation can never compute under this config is refused
    here, not found out after training (no `best/`). The data-dependent case (cross-sectional
    metrics need several symbols per date) is checked once the data is built
    (`training.validation.check_metric_defined`)."""
    if cfg.forecast_val_origins is not None and cfg.lookback_window < 2:
        raise ConfigError(
            f"lookback_window: forecast validation needs >= 2 history rows per origin, got "
            f"{cfg.lookback_window}; raise lookback_window or drop forecast_val_origins"
        )
    name = (cfg.best_metric or "").removeprefix("val_")
    if name in SAMPLED_METRICS and cfg.forecast_val_sample_count < 2:
        raise ConfigError(
            f"best_metric: '{cfg.best_metric}' is computed from several sample paths per "
            f"origin, and forecast_val_sample_count is {cfg.forecast_val_sample_count}; set "
            "forecast_val_sample_count >= 2 (e.g. 8)"
        )


def check_numbers(cfg: TrainConfig) -> None:
    """NaN/inf and integers beyond 64 bits fail here, naming the key, rather than as a
    traceback or a NaN loss later. Only `max_grad_norm` may be infinite (measure only)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if isinstance(item, float) and math.isnan(item):
                raise ConfigError(f"{f.name}: must be a number, got nan")
            if isinstance(item, float) and math.isinf(item) and f.name != "max_grad_norm":
                raise ConfigError(f"{f.name}: must be finite, got {item}")
            if isinstance(item, int) and not -(2**63) <= item < 2**63:
                raise ConfigError(f"{f.name}: {item} does not fit in 64 bits")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"seed: must lie in [0, 2**63 - 1], got {cfg.seed}")


def resolve_device(
    value: object, name: str = "device", error: type[Exception] = ConfigError
) -> torch.device:
    """The torch device `value` names (None or 'auto': cuda when available, else cpu), or one
    line naming `name` and what this machine allows: an unknown kind ('tpu0'), cuda without
    CUDA and `cuda:N` beyond the devices present fail here, not as a traceback at `.to()`.
    (torch is imported here: the config itself imports without it.)"""
    import torch

    if value is None or value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = value if isinstance(value, torch.device) else torch.device(str(value))
    except (RuntimeError, TypeError, ValueError):
        device = None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    allowed = "auto, cpu" + (f", cuda, cuda:0 ... cuda:{count - 1}" if count else "")
    if device is None or device.type not in ("cpu", "cuda"):
        raise error(f"{name}: {str(value)!r} is not a device; choose one of: {allowed}")
    if device.type == "cpu" and device.index not in (None, 0):
        raise error(f"{name}: {str(value)!r} is not a device; choose one of: {allowed}")
    if device.type == "cuda" and not count:
        raise error(
            f"{name}: {str(value)!r} was requested but this machine has no CUDA device; "
            f"choose one of: {allowed}"
        )
    if device.index is not None and device.type == "cuda" and device.index >= count:
        raise error(
            f"{name}: {str(value)!r} is beyond the {count} CUDA device(s) of this machine; "
            f"choose one of: {allowed}"
        )
    return device
