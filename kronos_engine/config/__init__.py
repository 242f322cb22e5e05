"""Training configuration: the schema (`TrainConfig` and its value rules), loading (YAML file <
explicit values), and `check`, the one gate before any work.

`kronos_engine.config` exports what it always did (`TrainConfig`, `ConfigError`, `coerce`,
`field_type`, `CHOICES` and the other constants) plus the loading and checking functions.
"""

from kronos_engine.config.checks import check, check_plugins
from kronos_engine.config.loading import config_keys, load_config, merged_values, read_yaml_config
from kronos_engine.config.schema import (
    BAD_DATA_POLICIES,
    BEST_MODES,
    CHOICES,
    DATA_SOURCES,
    DEFAULT_LR,
    DEFAULT_MAX_GRAD_NORM,
    DEVICES,
    FINETUNE_METHODS,
    FORECAST_VAL_METRICS,
    LOGGERS,
    NAN_POLICIES,
    PRECISIONS,
    PREDICTOR_PRESETS,
    SAMPLING_MODES,
    SCHEDULERS,
    TOKENIZER_PRESETS,
    TRAIN_TYPES,
    ConfigError,
    TrainConfig,
    coerce,
    field_type,
    predictor_tokenizer,
    unwrap_optional,
)

__all__ = [
    "BAD_DATA_POLICIES", "BEST_MODES", "CHOICES", "DATA_SOURCES", "DEFAULT_LR",
    "DEFAULT_MAX_GRAD_NORM", "DEVICES", "FINETUNE_METHODS", "FORECAST_VAL_METRICS", "LOGGERS",
    "NAN_POLICIES", "PRECISIONS", "PREDICTOR_PRESETS", "SAMPLING_MODES", "SCHEDULERS",
    "TOKENIZER_PRESETS", "TRAIN_TYPES", "ConfigError", "TrainConfig", "check", "check_plugins",
    "coerce", "config_keys", "field_type", "load_config",
    "merged_values", "predictor_tokenizer", "read_yaml_config", "unwrap_optional",
]  # fmt: skip
