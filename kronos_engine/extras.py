"""Optional dependencies: which extra provides each, the one-line error a config gets when it
asks for a tool that is not installed, and the one guarded import of matplotlib (plots)."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from kronos_engine.errors import ConfigError, PlotError, UsageError

log = logging.getLogger("kronos_engine")

# import name -> the pyproject extra that installs it
EXTRA_OF = {
    "peft": "peft",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet",
    "ccxt": "ccxt",
    "exchange_calendars": "calendars",
    "optuna": "sweep",
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


def import_optuna() -> ModuleType:
    """Optuna for `scripts/sweep.py`, or one line saying how to install the `sweep` extra."""
    try:
        return importlib.import_module("optuna")
    except ImportError:
        raise UsageError(
            "scripts/sweep.py needs optuna, which is not installed: "
            "pip install 'kronos-engine[sweep]' (or pip install optuna matplotlib)"
        ) from None


def import_pyplot() -> ModuleType:
    """`matplotlib.pyplot` on the file-only Agg backend (works on headless machines), or a
    `PlotError` in one line naming the `plot` extra. Every plot (training curves, forecasts,
    evaluation, backtest) comes through here, so none opens a window or picks its own backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib, which is not installed: "
            "pip install 'kronos-engine[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def optional_pyplot(what: str) -> ModuleType | None:
    """`import_pyplot` for outputs that are extras of a command (an evaluation's plots): None,
    with one warning, when matplotlib is missing."""
    try:
        return import_pyplot()
    except PlotError:
        log.warning(f"no {what}: matplotlib is not installed (pip install -e '.[plot]')")
        return None
