"""The `sweep:` section of an experiment YAML: what to search, for which metric, how many trials,
and when to stop a trial early. Every key is checked here, before any study or folder exists;
each mistake is one `ConfigError` naming `sweep.<key>` and what is allowed.

    sweep:
      objective: val_loss            # any validation metric; direction from best_mode
      n_trials: 8                    # finished trials (complete + pruned) the study reaches
      sampler: tpe                   # tpe or random
      seed: 0                        # the sampler's seed (default: the config's seed)
      pruner: {type: median, n_startup_trials: 2}
      space:
        lr: {log_uniform: [1.0e-5, 1.0e-3]}
        epochs: {int: [1, 4]}
        finetune_method: {choice: [full, lora, freeze]}

Only the description lives here (no optuna): `kronos_engine.sweep.engine` turns it into a
sampler, a pruner and suggestions.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kronos_engine.config.loading import config_keys
from kronos_engine.config.schema import coerce, field_type, unwrap_optional
from kronos_engine.errors import ConfigError, did_you_mean

KEYS = ("objective", "n_trials", "sampler", "seed", "pruner", "space", "max_retry")
SAMPLERS = ("tpe", "random")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int", "choice")
# pruner type -> its settings and the type of each (optuna.pruners' own arguments)
PRUNERS: dict[str, dict[str, type]] = {
    "none": {},
    "median": {
        "n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int,
        "n_min_trials": int,
    },
    "percentile": {
        "percentile": float, "n_startup_trials": int, "n_warmup_steps": int,
        "interval_steps": int, "n_min_trials": int,
    },
    "successive_halving": {
        "min_resource": int, "reduction_factor": int, "min_early_stopping_rate": int,
        "bootstrap_count": int,
    },
    "hyperband": {
        "min_resource": int, "max_resource": int, "reduction_factor": int,
        "bootstrap_count": int,
    },
}  # fmt: skip
REQUIRED_SETTINGS = {"percentile": ("percentile",)}
# Keys a sweep sets itself (or that would leave the sweep's folders): never searched.
NOT_SEARCHABLE = {
    "train_type": "a sweep trains one train_type; set it in the config or with --train_type",
    "output_dir": "each trial writes to <exp_dir>/sweep/trial_<n>",
    "exp_dir": "the sweep's folder is <exp_dir>/sweep",
    "resume": "an interrupted trial is re-queued by the sweep",
    "overwrite": "trials never replace a run",
    "best_metric": "it is the sweep's objective",
    "best_mode": "it is the objective's direction",
}


@dataclass(frozen=True)
class Param:
    """One searched key: its distribution, bounds (`low`, `high`, `step`) or `choices`."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def candidates(self) -> list[Any]:
        """The values the rules are checked on before any trial: every choice, both bounds."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class SweepSpec:
    objective: str
    direction: str  # "minimize" or "maximize" (from best_mode)
    n_trials: int
    sampler: str
    seed: int
    pruner: str
    pruner_settings: dict[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    max_retry: int = 3

    def to_json(self) -> str:
        """The spec as one canonical string: stored with the study, so a restarted sweep
        with a different section is refused instead of mixing two searches."""
        data = {
            "objective": self.objective, "direction": self.direction,
            "n_trials": self.n_trials, "sampler": self.sampler, "seed": self.seed,
            "pruner": self.pruner, "pruner_settings": self.pruner_settings,
            "space": [vars(p) | {"choices": list(p.choices)} for p in self.space],
            "max_retry": self.max_retry,
        }  # fmt: skip
        return json.dumps(data, sort_keys=True)


def parse_sweep(
    section: Any, base: Mapping[str, Any], default_metric: str, where: str = ""
) -> SweepSpec:
    """The checked `SweepSpec` of a `sweep:` section over the trial config `base` (its merged
    values: `best_metric`, `best_mode`, `seed`); `default_metric` is the strategy's metric,
    the objective when neither `sweep.objective` nor `best_metric` names one."""
    at = f"{where}: " if where else ""
    if section is None:
        raise ConfigError(
            f"{at}sweep: the config has no sweep: section; add one with at least n_trials and "
            "space (see params.md, 'scripts/sweep.py')"
        )
    if not isinstance(section, Mapping):
        raise ConfigError(f"{at}sweep: expected a mapping of {', '.join(KEYS)}")
    for key in section:
        if key not in KEYS:
            raise ConfigError(
                f"{at}sweep.{key}: unknown key{_close(str(key), KEYS)}; allowed: {', '.join(KEYS)}"
            )
    objective = _objective(section, base, default_metric, at)
    mode = base.get("best_mode", "min")
    n_trials = _int(section, "n_trials", None, 1, at)
    sampler = section.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(
            f"{at}sweep.sampler: {sampler!r} is not allowed; choose one of {list(SAMPLERS)}"
        )
    seed = _int(section, "seed", int(base.get("seed", 100)), 0, at)
    pruner, settings = _pruner(section.get("pruner", "median"), at)
    if "space" not in section or not isinstance(section["space"], Mapping) or not section["space"]:
        raise ConfigError(
            f"{at}sweep.space: required, a mapping of config keys to a distribution, e.g. "
            "lr: {log_uniform: [1.0e-5, 1.0e-3]}"
        )
    space = tuple(_param(str(k), v, at) for k, v in section["space"].items())
    return SweepSpec(
        objective=objective,
        direction="maximize" if mode == "max" else "minimize",
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        pruner=pruner,
        pruner_settings=settings,
        space=space,
        max_retry=_int(section, "max_retry", 3, 0, at),
    )


def _objective(section: Mapping[str, Any], base: Mapping[str, Any], default: str, at: str) -> str:
    given = section.get("objective")
    best = base.get("best_metric")
    if given is None:
        return best or default
    if not isinstance(given, str) or not given.startswith("val_"):
        raise ConfigError(
            f"{at}sweep.objective: {given!r} is not a validation metric; name one such as "
            "val_loss, val_mae, val_rank_ic or val_crps"
        )
    if best is not None and best != given:
        raise ConfigError(
            f"{at}sweep.objective: '{given}' differs from best_metric '{best}'; the objective "
            "is each trial's best_metric, so drop one of them"
        )
    return given


def _int(section: Mapping[str, Any], key: str, default: int | None, low: int, at: str) -> int:
    value = section.get(key, default)
    if value is None:
        raise ConfigError(f"{at}sweep.{key}: required, an integer >= {low}")
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{at}sweep.{key}: expected an integer >= {low}, got {value!r}")
    return value


def _pruner(value: Any, at: str) -> tuple[str, dict[str, Any]]:
    kinds = list(PRUNERS)
    if isinstance(value, str) or value is None:
        value = {"type": "none" if value is None else value}
    if not isinstance(value, Mapping) or "type" not in value:
        raise ConfigError(
            f"{at}sweep.pruner: expected a pruner name or {{type: <name>, <setting>: ...}}; "
            f"types: {kinds}"
        )
    kind = value["type"]
    if kind not in PRUNERS:
        raise ConfigError(f"{at}sweep.pruner.type: {kind!r} is not allowed; choose one of {kinds}")
    allowed = PRUNERS[kind]
    settings: dict[str, Any] = {}
    for name, setting in value.items():
        if name == "type":
            continue
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise ConfigError(
                f"{at}sweep.pruner.{name}: not a setting of the {kind} pruner; its settings: {known}"
            )
        tp = allowed[name]
        number = isinstance(setting, (int, float)) and not isinstance(setting, bool)
        if not number or (tp is int and not isinstance(setting, int)) or setting < 0:
            kind_name = "an integer" if tp is int else "a number"
            raise ConfigError(
                f"{at}sweep.pruner.{name}: expected {kind_name} >= 0, got {setting!r}"
            )
        settings[name] = tp(setting)
    for name in REQUIRED_SETTINGS.get(kind, ()):
        if name not in settings:
            raise ConfigError(f"{at}sweep.pruner.{name}: required by the {kind} pruner")
    if kind == "percentile" and not 0 <= settings["percentile"] <= 100:
        raise ConfigError(f"{at}sweep.pruner.percentile: must lie in [0, 100]")
    if "reduction_factor" in settings and settings["reduction_factor"] < 2:
        raise ConfigError(f"{at}sweep.pruner.reduction_factor: must be >= 2")
    return kind, settings


def _param(key: str, value: Any, at: str) -> Param:
    name = f"{at}sweep.space.{key}"
    keys = config_keys()
    if key not in keys:
        raise ConfigError(
            f"{name}: not a config key{_close(key, keys)} (see params.md for the keys)"
        )
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"{name}: not searchable: {NOT_SEARCHABLE[key]}")
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise ConfigError(
            f"{name}: expected one of {{uniform: [low, high]}}, {{log_uniform: [low, high]}}, "
            "{int: [low, high]} (or [low, high, step]), {log_int: [low, high]}, "
            "{choice: [a, b, ...]}"
        )
    kind, args = next(iter(value.items()))
    tp, _ = unwrap_optional(field_type(key))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{name}: choice: expected a non-empty list of values")
        choices = tuple(coerce(f"{name}", v, field_type(key)) for v in args)
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            raise ConfigError(f"{name}: choice: a value is listed twice; list each once")
        return Param(key, kind, choices=choices)
    wanted = int if kind in ("int", "log_int") else float
    if tp is not wanted:
        type_name = getattr(tp, "__name__", str(tp)) if typing.get_origin(tp) is None else str(tp)
        hint = (
            "int or log_int" if tp is int else "uniform or log_uniform" if tp is float else "choice"
        )
        raise ConfigError(
            f"{name}: {kind} needs a {wanted.__name__} key, and {key} is {type_name}; use {hint}"
        )
    sizes = (2, 3) if kind == "int" else (2,)
    if not isinstance(args, list) or len(args) not in sizes:
        form = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
        raise ConfigError(f"{name}: {kind}: expected {form}")
    try:
        bounds = [coerce(name, v, wanted) for v in args]
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {kind} takes numbers [low, high]") from None
    if any(not math.isfinite(b) for b in bounds):
        raise ConfigError(f"{name}: {kind}: bounds must be finite numbers")
    low, high = bounds[0], bounds[1]
    if not low < high:
        raise ConfigError(f"{name}: {kind}: low must be below high, got [{low}, {high}]")
    if kind.startswith("log") and low <= 0:
        raise ConfigError(f"{name}: {kind}: low must be > 0 on a log scale, got {low}")
    step = bounds[2] if len(bounds) == 3 else None
    if step is not None and step < 1:
        raise ConfigError(f"{name}: int: step must be >= 1, got {step}")
    return Param(key, kind, low=low, high=high, step=step)


def _close(name: str, known: Any) -> str:
    hint = did_you_mean(name, known)
    return f"; {hint}" if hint else ""
