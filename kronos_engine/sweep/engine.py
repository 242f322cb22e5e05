"""The Optuna side of a sweep: storage, study, sampler, pruner and the suggestions of one trial.

Storage: a journal file (`optuna.storages.JournalStorage`, the default `<exp_dir>/sweep/
study.journal`: several processes append to it under a lock, also on a shared disk), or an RDB
URL (`sqlite:///...`, `postgresql://...`, `mysql://...`), which gets Optuna's heartbeat: a trial
whose worker stops beating is failed by `fail_stale_trials` and re-queued by
`RetryHeartbeatStaleTrialCallback`. Journal storage has no heartbeat in Optuna, so `runner` finds its
stale trials by their owner's lock (see there) and re-queues them with the same callback.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from kronos_engine.errors import ConfigError
from kronos_engine.sweep.space import decode, encode
from kronos_engine.sweep.spec import SweepSpec

# The heartbeat, fail_stale_trials and the retry callback are marked experimental by Optuna
# (a warning at each use); the sweep relies on them as documented.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = 30  # RDB storage: seconds between a running trial's heartbeats
GRACE_S = 120  # ... and how long a missing one is tolerated before the trial counts as dead
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")
SPEC_ATTR = "kronos_sweep"  # the study's user attribute holding the sweep section it runs


def is_rdb(storage: str) -> bool:
    return "://" in storage and storage.split(":", 1)[0].split("+", 1)[0] in RDB_SCHEMES


def check_storage(storage: str) -> None:
    """`--storage` names an RDB URL optuna opens or a journal file path (before any write)."""
    if "://" in storage and not is_rdb(storage):
        raise ConfigError(
            f"--storage: {storage!r} is not a database URL optuna opens ({', '.join(RDB_SCHEMES)}) "
            "nor a journal file path"
        )
    if not is_rdb(storage) and Path(storage).is_dir():
        raise ConfigError(f"--storage: {storage!r} is a folder; name the journal file in it")


def open_storage(storage: str, max_retry: int = 3) -> optuna.storages.BaseStorage:
    """The storage `storage` names: an RDB URL, else a journal file path."""
    check_storage(storage)
    if is_rdb(storage):
        return optuna.storages.RDBStorage(
            storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_callback(max_retry),
        )  # fmt: skip
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def retry_callback(max_retry: int) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's re-queue of a dead trial: a WAITING copy with its parameters, which names the
    original (`retried_trial_number`, `retry_history`)."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def retried_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """The trial this one re-runs (its retry callback's record), None for a first run."""
    return trial.system_attrs.get("failed_trial")


def make_pruner(kind: str, settings: dict[str, Any]) -> optuna.pruners.BasePruner:
    pruners = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    return pruners[kind](**settings)


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(spec: SweepSpec, storage: str, study_name: str) -> optuna.Study:
    """Create the study, or join the one of that name; a study started with another sweep
    section (space, objective, direction, ...) is refused, not mixed with this one.

    The sampler's seed is `seed` plus the number of trials the study already holds: a new
    study draws exactly what `seed` says, and a restarted sweep does not draw its first
    trials' values again."""
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage, spec.max_retry),
        direction=spec.direction,
        pruner=make_pruner(spec.pruner, spec.pruner_settings),
        load_if_exists=True,
    )
    study.sampler = make_sampler(spec, spec.seed + len(study.get_trials(deepcopy=False)))
    recorded = study.user_attrs.get(SPEC_ATTR)
    if recorded is None:
        study.set_user_attr(SPEC_ATTR, spec.to_json())
    elif recorded != spec.to_json():
        raise ConfigError(
            f"sweep: the study '{study_name}' in {storage} was started with another sweep: "
            "section; restore it, or start a new study with --study_name (or another exp_dir)"
        )
    return study


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """The trial's config values, one suggestion per searched key (a re-queued trial gets the
    values it was enqueued with)."""
    values: dict[str, Any] = {}
    for p in spec.space:
        if p.kind == "choice":
            stored = trial.suggest_categorical(p.key, [encode(p, c) for c in p.choices])
            values[p.key] = decode(p, stored)
        elif p.kind in ("int", "log_int"):
            values[p.key] = trial.suggest_int(
                p.key, int(p.low), int(p.high), step=p.step or 1, log=p.kind == "log_int"
            )
        else:
            values[p.key] = trial.suggest_float(
                p.key, float(p.low), float(p.high), log=p.kind == "log_uniform"
            )
    return values
