"""The fixed sets of allowed values (`CHOICES`) and the defaults that depend on what is trained:
the constants both the schema and its value rules read, in a module of their own so neither
imports the other back."""

from __future__ import annotations

TRAIN_TYPES = ("tokenizer", "predictor")
DATA_SOURCES = ("auto", "demo", "csv", "qlib", "sina", "ccxt")  # auto: told by data_path
SAMPLING_MODES = ("uniform", "per_symbol")
SCHEDULERS = ("onecycle", "cosine", "constant", "sgdr", "wsd")
PRECISIONS = ("fp32", "bf16")
# `device` also takes `cuda:N` (`rules.validate_device`); these are the names `--help` shows.
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
BAD_DATA_POLICIES = ("error", "repair")
NAN_POLICIES = ("stop", "skip")
BEST_MODES = ("min", "max")
# Forecast metrics the forecast validation logs as `val_<name>` (kronos_engine.evaluation).
FORECAST_VAL_METRICS = (
    "mae", "rmse", "mape", "mase", "skill", "direction_accuracy", "crps", "coverage_80",
    "coverage_90", "ic", "icir", "rank_ic", "rank_icir",
)  # fmt: skip
TOKENIZER_PRESETS = ("tiny", "base")
PREDICTOR_PRESETS = ("tiny", "mini", "small", "base")
FINETUNE_METHODS = ("full", "lora", "freeze")
LOGGERS = ("tensorboard", "mlflow", "wandb", "comet")

# Public fine-tuning recipe defaults that depend on what is trained.
DEFAULT_LR = {"tokenizer": 2e-4, "predictor": 4e-5}
DEFAULT_MAX_GRAD_NORM = {"tokenizer": 2.0, "predictor": 3.0}

# Keys whose value must be one of a fixed set (checked by `validate`).
CHOICES: dict[str, tuple[str, ...]] = {
    "train_type": TRAIN_TYPES,
    "data_source": DATA_SOURCES,
    "sampling": SAMPLING_MODES,
    "scheduler": SCHEDULERS,
    "precision": PRECISIONS,
    "bad_data": BAD_DATA_POLICIES,
    "nan_policy": NAN_POLICIES,
    "best_mode": BEST_MODES,
}
