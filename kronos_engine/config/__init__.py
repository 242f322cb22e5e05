"""Training configuration: the schema (`TrainConfig`, its keys and value rules) and loading
(defaults < YAML file < explicit values). A leaf: it imports only the foundations (no torch, no
files but the YAML it is given), so any layer can read a config.

The checks that look at files, packages and plug-ins (`check`, the one gate before any work)
live in the training layer: `kronos_engine.training.preflight`.
"""

from kronos_engine.config.choices import (
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
)
from kronos_engine.config.loading import (
    ConfigLayers,
    config_keys,
    config_layers,
    load_config,
    merged_values,
    read_config_layers,
    read_yaml_config,
    write_config,
)
from kronos_engine.config.schema import (
    TrainConfig,
    coerce,
    field_type,
    predictor_tokenizer,
    unwrap_optional,
)
from kronos_engine.errors import ConfigError

__all__ = [
    "BAD_DATA_POLICIES", "BEST_MODES", "CHOICES", "DATA_SOURCES", "DEFAULT_LR",
    "DEFAULT_MAX_GRAD_NORM", "DEVICES", "FINETUNE_METHODS", "FORECAST_VAL_METRICS", "LOGGERS",
    "NAN_POLICIES", "PRECISIONS", "PREDICTOR_PRESETS", "SAMPLING_MODES", "SCHEDULERS",
    "TOKENIZER_PRESETS", "TRAIN_TYPES", "ConfigError", "ConfigLayers", "TrainConfig",
    "coerce", "config_keys", "config_layers", "read_config_layers", "field_type", "load_config",
    "merged_values", "predictor_tokenizer", "read_yaml_config", "unwrap_optional", "write_config",
]  # fmt: skip
