"""The pipeline of one experiment: data preparation -> tokenizer -> predictor.

Each stage is an ordinary run (`run_training`) writing to `<exp_dir>/<stage>`; the processed
data is built once into `<exp_dir>/cache` and only read by the stages. Every stage is checked
(`kronos_engine.config.check`) and its output dir held before the data is built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kronos_engine import distenv
from kronos_engine.config import TrainConfig, merged_values
from kronos_engine.config.loading import ConfigLayers
from kronos_engine.config.rules import resolve_device
from kronos_engine.errors import ConfigError
from kronos_engine.run import outputs as run_dir
from kronos_engine.training.preflight import check

log = logging.getLogger("kronos_engine")

STAGES = ("tokenizer", "predictor")


def stage_configs(
    layers: ConfigLayers,
    flags: Mapping[str, Any],
    *,
    skip_tokenizer: bool = False,
    skip_predictor: bool = False,
    skip_existing: bool = False,
) -> tuple[dict[str, TrainConfig], TrainConfig]:
    """The validated config of every stage to run (by name, in order), and the one data
    preparation uses. A stage's values are the file's shared ones, its `tokenizer:` /
    `predictor:` section over them, and the command-line `flags` over both: a flag applies to
    every stage. `skip_existing` drops a stage whose `best/` exists (after checking its config)."""
    shared = merged_values(layers, flags)
    if shared.get("train_type") is not None:
        log.info("pipeline: ignoring train_type from the config; each stage sets its own")
    exp_dir = Path(shared.get("exp_dir") or TrainConfig().exp_dir)
    stages: dict[str, TrainConfig] = {}
    configs = []
    for name in STAGES:
        if (name == "tokenizer" and skip_tokenizer) or (name == "predictor" and skip_predictor):
            continue
        cfg = _stage_config(merged_values(layers, flags, stage=name), name, exp_dir)
        configs.append(cfg)
        best = cfg.resolved_output_dir / "best"
        if skip_existing and best.is_dir():
            log.info("pipeline: skipping the %s stage, %s exists (--skip-existing)", name, best)
            continue
        stages[name] = cfg
    if len({cfg.exp_dir for cfg in configs}) > 1:
        raise ConfigError(
            "exp_dir: the stages name different experiments "
            f"({', '.join(repr(c.exp_dir) for c in configs)}); the predictor reads the "
            "tokenizer from <exp_dir>/tokenizer/best, so set exp_dir once, outside the sections"
        )
    data_cfg = next(iter(stages.values()), None) or next(iter(configs), None)
    if data_cfg is None:
        values = {k: v for k, v in shared.items() if k != "train_type"}
        data_cfg = TrainConfig.from_dict({"cache_dir": str(exp_dir / "cache"), **values})
    return stages, data_cfg


def _stage_config(values: dict[str, Any], name: str, exp_dir: Path) -> TrainConfig:
    values.pop("train_type", None)
    for key, why in (
        ("output_dir", "each stage writes to <exp_dir>/<stage>; set exp_dir instead"),
        ("resume", "resume a single stage with scripts/train.py --resume=<its output dir>"),
    ):
        if values.get(key) is not None:
            raise ConfigError(f"{key}: not supported by the pipeline; {why}")
    if values.get("cache_dir") is None:
        values["cache_dir"] = str(Path(values.get("exp_dir") or exp_dir) / "cache")
    return TrainConfig.from_dict({**values, "train_type": name})


def check_stages(stages: Mapping[str, TrainConfig], hold: bool = True) -> None:
    """`check` every stage and (`hold`, not in a `--nprocs` parent) hold its output dir, before
    any data is built. A predictor after a tokenizer stage reads the tokenizer that stage
    trains (`<exp_dir>/tokenizer/best`, which wins over `pretrained_tokenizer`); its files are
    checked when the predictor stage starts."""
    for name, cfg in stages.items():
        resolve_device(cfg.device)  # `cuda:1` on a machine without it: before the data
        check(cfg, tokenizer_from_earlier_stage=name == "predictor" and "tokenizer" in stages)
        if hold:
            run_dir.hold(cfg)  # until the stage ends


def prepare_data(cfg: TrainConfig) -> None:
    """Build (or verify) the cached splits once so both stages only read them."""
    from kronos_engine.data import DataSpec, build_datasets

    splits = build_datasets(DataSpec.from_mapping(cfg.to_dict()))
    log.info("data prepared in %s (%s)", cfg.cache_dir, splits.summary.get("cache"))


def run_stages(stages: Mapping[str, TrainConfig], executor) -> list:
    """Run the stages in order on one executor (one process group), stopping after a preempted
    one. Returns the finished `TrainContext`s; the caller reports them and closes the
    executor."""
    from kronos_engine.training.builder import TrainContextBuilder

    finished = []
    for name, cfg in stages.items():
        if distenv.is_writer():
            log.info("pipeline: %s stage", name)
        ctx = run_training(TrainContextBuilder(cfg, executor))
        ctx.executor.barrier()  # every rank done with this stage before the next/teardown
        finished.append(ctx)
        if ctx.preempted:
            break
    return finished


def run_training(builder):
    """Build (which checks) and fit one run of a `TrainContextBuilder`; returns the finished
    `TrainContext`. The caller closes `builder.executor` (set once made, also on a failure)."""
    from kronos_engine.training.trainer import Trainer

    ctx = builder.build()
    Trainer(ctx).fit()  # says the run's size and time (`trainer.RunEstimate`)
    return ctx
