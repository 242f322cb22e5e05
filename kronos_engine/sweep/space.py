"""From a `SweepSpec` to trial configs: the folders of a sweep, each trial's config values, and
the up-front check that every value the space can produce passes the trainer's own rules
(`TrainConfig.from_dict` and `training.preflight.check`, the gate `scripts/train.py` passes),
so a refused value fails before the first trial, not in the middle of the sweep."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kronos_engine.config import TrainConfig
from kronos_engine.errors import ConfigError
from kronos_engine.registry import STRATEGIES
from kronos_engine.sweep.spec import Param, SweepSpec
from kronos_engine.training.model_factory import BUILT_IN_STRATEGIES
from kronos_engine.training.preflight import check

SWEEP_DIR = "sweep"
CHECK_DIR = "trial_check"  # the output dir the checks name; never created
MAX_COMBINATIONS = 64  # beyond that the candidates are checked one key at a time


def sweep_dir(base: Mapping[str, Any]) -> Path:
    """`<exp_dir>/sweep`: the study journal, the trials' run folders, the report."""
    return Path(str(base.get("exp_dir") or TrainConfig().exp_dir)) / SWEEP_DIR


def default_metric(base: Mapping[str, Any]) -> str:
    """The metric a run of `base` picks `best/` by without `best_metric`: its strategy's."""
    train_type = str(base.get("train_type"))
    name = base.get("strategy") or BUILT_IN_STRATEGIES.get(train_type)
    if name is None:
        return "val_loss"  # an unknown train_type: TrainConfig's own check names it
    return STRATEGIES.get(str(name)).metric_name


def trial_dir(folder: Path, number: int) -> Path:
    return folder / f"trial_{number}"


def trial_values(
    base: Mapping[str, Any], spec: SweepSpec, params: Mapping[str, Any], output_dir: Path
) -> dict[str, Any]:
    """One trial's config values: the base config, the sampled `params` over it, the objective
    as `best_metric` (so `best/` and early stopping follow it) and the trial's run folder."""
    values = {**base, **params, "output_dir": str(output_dir), "best_metric": spec.objective}
    values.pop("resume", None)
    return values


def encode(param: Param, value: Any) -> Any:
    """A choice as optuna stores it: scalars as they are, lists (freeze_patterns) as JSON."""
    if param.kind == "choice" and not (value is None or isinstance(value, (bool, int, float, str))):
        return json.dumps(value)
    return value


def decode(param: Param, stored: Any) -> Any:
    if param.kind == "choice" and isinstance(stored, str):
        for choice in param.choices:
            if encode(param, choice) == stored and not isinstance(choice, str):
                return choice
    return stored


def check_space(spec: SweepSpec, base: Mapping[str, Any], folder: Path) -> TrainConfig:
    """Every combination of the candidates (each choice, both bounds of a range; one key at a
    time when there are more than `MAX_COMBINATIONS`) through the trainer's checks, with the
    failing key and value named. Returns the checked config of the first combination."""
    check_base(spec, base, folder)
    params = spec.space
    grids = [p.candidates() for p in params]
    total = 1
    for grid in grids:
        total *= len(grid)
    if total <= MAX_COMBINATIONS:
        combos = [dict(zip([p.key for p in params], combo)) for combo in itertools.product(*grids)]
    else:
        combos = [{p.key: value} for p, grid in zip(params, grids) for value in grid]
    first = None
    for combo in combos:
        cfg = _checked(spec, base, combo, folder)
        first = first or cfg
    assert first is not None
    return first


def check_base(spec: SweepSpec, base: Mapping[str, Any], folder: Path) -> None:
    """The keys a sweep sets itself, and the objective as the trials' `best_metric`."""
    for key, why in (("output_dir", "each trial writes to <exp_dir>/sweep/trial_<n>"),
                     ("resume", "an interrupted trial is re-queued by the sweep")):  # fmt: skip
        if base.get(key):
            raise ConfigError(f"{key}: not used by a sweep ({why}); drop it")


def _checked(
    spec: SweepSpec, base: Mapping[str, Any], combo: Mapping[str, Any], folder: Path
) -> TrainConfig:
    values = trial_values(base, spec, combo, folder / CHECK_DIR)
    try:
        cfg = TrainConfig.from_dict(values)
        check(cfg)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("best_metric:"):
            message = "sweep.objective:" + message.removeprefix("best_metric:")
        shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
        raise ConfigError(f"sweep.space: the trial with {shown} is refused: {message}") from None
    return cfg
