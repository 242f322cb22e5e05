"""`check`: the one gate every entry point (`scripts/train.py`, `scripts/pipeline.py`,
`TrainContextBuilder.build`) passes before any work, so a typo fails in a second, not after the
data build, however the run was started.

Value rules first (`TrainConfig.validate`), then the checks that look at files, installed
packages and the plug-in registries. It lives in the training layer, above everything it asks
(the config stays a leaf that imports no torch); pyqlib is imported only for a qlib run.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kronos_engine.callback import TrainCallback
from kronos_engine.config.schema import TrainConfig, predictor_tokenizer
from kronos_engine.errors import ConfigError, RegistryError
from kronos_engine.extras import LOGGER_PACKAGES, require
from kronos_engine.registry import CALLBACKS, STRATEGIES
from kronos_engine.run import outputs as run_dir
from kronos_engine.run.checkpoints import find_resume_checkpoint
from kronos_engine.strategy import Strategy, check_strategy_train_type
from kronos_engine.training.finetune import check_targets
from kronos_engine.training.model_factory import (
    BUILT_IN_STRATEGIES,
    check_pretrained_paths,
    check_tokenizer,
    model_structure,
)
from kronos_engine.training.resume import check_resume_fits
from kronos_engine.training.validation import check_metric_known


def check(
    cfg: TrainConfig,
    *,
    tokenizer_from_earlier_stage: bool = False,
    callbacks: Sequence[Any] | None = None,
) -> Path | None:
    """Raise `ConfigError` (or a subclass) for the first thing that would stop the run.

    A predictor's tokenizer is resolved here, once, and recorded in `cfg.tokenizer_path`: the
    run (and the `config.yaml` it writes) then reads the tokenizer that was checked, even when
    `<exp_dir>/tokenizer/best` appears later. `tokenizer_from_earlier_stage` says the
    experiment's own tokenizer is trained before this run starts (the pipeline's tokenizer
    stage): it is then the tokenizer, and its files are checked when this stage is built.
    `callbacks`: the run's user callbacks (names or instances; default `cfg.callbacks`), for
    the metrics they add to a validation.

    Returns the (verified) checkpoint a `resume` continues from, None without `resume`."""
    cfg.validate()
    if cfg.resume and not Path(cfg.resume).exists():
        raise ConfigError(f"resume: '{cfg.resume}' does not exist")
    if cfg.data_source == "qlib":
        from kronos_engine.data.sources_qlib import require_pyqlib

        require_pyqlib()

    tokenizer = None
    if cfg.train_type == "predictor":
        tokenizer = predictor_tokenizer(cfg, trained_first=tokenizer_from_earlier_stage)
    check_pretrained_paths(cfg, tokenizer)
    run_dir.check_output_dir(cfg)
    check_plugins(cfg)
    check_best_metric(cfg, cfg.callbacks if callbacks is None else callbacks)
    if tokenizer is not None and not tokenizer_from_earlier_stage:
        check_tokenizer(cfg, tokenizer)
    check_available(cfg)
    check_trackers(cfg)
    check_finetune(cfg)
    checkpoint = None
    if cfg.resume:
        checkpoint = find_resume_checkpoint(cfg.resume)
        check_resume_fits(cfg, checkpoint)
    if tokenizer is not None:
        cfg.tokenizer_path = tokenizer
    return checkpoint


def check_finetune(cfg: TrainConfig) -> None:
    """`lora_targets` / `freeze_patterns` fit the model's names, on its meta-device structure
    (no weights, no data); a custom strategy's model is checked when it is built."""
    if cfg.finetune_method == "full":
        return
    model = model_structure(cfg)
    if model is not None:
        check_targets(model, cfg)


def check_trackers(cfg: TrainConfig) -> None:
    """Each logger's own offline check of its settings (`check_config`, e.g. MLflow's
    `tracking_uri`), before any run folder exists: a tracker that cannot start would
    otherwise fail after the run folder was written."""
    for name in cfg.loggers:
        checker = getattr(CALLBACKS.get(name), "check_config", None)
        if checker is not None:
            checker(cfg)


def check_plugins(cfg: TrainConfig) -> None:
    """`strategy` and `callbacks` name registered (or importable) classes of the right base;
    the strategy trains this `train_type`; callbacks can be created without arguments."""

    checks = [("callbacks", name, CALLBACKS, TrainCallback) for name in cfg.callbacks]
    if cfg.strategy:
        checks.append(("strategy", cfg.strategy, STRATEGIES, Strategy))
    for key, name, registry, base in checks:
        try:
            obj = registry.get(name)
        except RegistryError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise ConfigError(
                f"{key}: '{name}' is {obj!r}, not a subclass of {base.__module__}.{base.__name__}"
            )
        if key == "strategy":
            check_strategy_train_type(obj, name, cfg.train_type)
        if key == "callbacks":  # the builder creates configured callbacks without arguments
            try:
                inspect.signature(obj).bind()
            except TypeError as exc:
                raise ConfigError(
                    f"callbacks: '{name}' cannot be created without arguments ({exc}); give it "
                    "defaults or pass an instance with TrainContextBuilder.with_callbacks"
                ) from None


def check_best_metric(cfg: TrainConfig, callbacks: Sequence[Any]) -> None:
    """`best_metric` names a metric this run's validation logs (after `check_plugins`: the
    strategy and the named callbacks resolve)."""
    strategy = STRATEGIES.get(cfg.strategy or BUILT_IN_STRATEGIES[cfg.train_type])
    resolved = [CALLBACKS.get(c) if isinstance(c, str) else c for c in callbacks]
    check_metric_known(cfg, strategy, resolved)


def check_available(cfg: TrainConfig) -> None:
    """Before any work: every optional package the config asks for is installed."""
    if cfg.finetune_method == "lora":
        require("peft", "finetune_method", "lora")
    for name in cfg.loggers:
        require(LOGGER_PACKAGES[name], "loggers", name)
