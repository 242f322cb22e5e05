"""Optional dependencies of the fine-tuning toolbox: which extra provides each, and the one-line
error a config gets when it asks for a tool that is not installed."""

from __future__ import annotations

import importlib
from types import ModuleType

from kronos_engine.config import ConfigError, TrainConfig

# import name -> the pyproject extra that installs it
EXTRA_OF = {
    "peft": "peft",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet",
}
# `loggers` entry -> the package it needs
LOGGER_PACKAGES = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet": "comet_ml",
}


def require(module: str, key: str, value: str) -> ModuleType:
    """Import an optional dependency, or stop with one line naming the key and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{key}: '{value}' needs the '{module}' package; install it with "
            f"pip install 'kronos-engine[{EXTRA_OF[module]}]'"
        ) from None


def check_available(cfg: TrainConfig) -> None:
    """Before any work: every optional package the config asks for is installed."""
    if cfg.finetune_method == "lora":
        require("peft", "finetune_method", "lora")
    for name in cfg.loggers:
        require(LOGGER_PACKAGES[name], "loggers", name)
