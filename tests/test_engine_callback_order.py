"""Callback order is declared by role (`kronos_engine.callback.ROLES`), not by list position."""

from __future__ import annotations

import random

import pytest
from engine_helpers import tiny_cfg

from kronos_engine import TrainCallback, TrainContextBuilder
from kronos_engine.callback import ROLES, CallbackList
from kronos_engine.errors import ConfigError
from kronos_engine.registry import CALLBACKS

# The order the builder used to assemble by hand for a config with every optional built-in.
FULL_ORDER = [
    "ActivationCheckpointing",
    "GradClipCallback",
    "NonFiniteGuard",
    "GracefulStop",
    "EMA",
    "ValidationCallback",
    "ForecastValidation",
    "BestCheckpoint",
    "EarlyStopping",
    "JSONLMetrics",
    "TensorBoardTracker",
    "MLflowTracker",
    "PeriodicCheckpoint",
    "RunSummary",
    "ProgressBar",
]


def _full_cfg(tmp_path):
    return tiny_cfg(
        tmp_path,
        train_type="predictor",
        tokenizer_path=str(tmp_path / "tok"),
        activation_checkpointing=True,
        ema=True,
        forecast_val_origins=8,
        early_stopping_patience=2,
        loggers=["tensorboard", "mlflow"],
        progress_bar=True,
    )


def _names(callbacks) -> list[str]:
    return [type(cb).__name__ for cb in callbacks]


class Mine(TrainCallback):
    pass


class MyLogger(TrainCallback):
    role = "logging"


def test_full_config_keeps_the_order_the_builder_used_to_write_out(tmp_path):
    builtins = TrainContextBuilder(_full_cfg(tmp_path)).default_callbacks()
    assert _names(CallbackList(builtins)) == FULL_ORDER


@pytest.mark.parametrize("seed", range(5))
def test_a_shuffled_list_of_the_builtins_comes_out_in_role_order(tmp_path, seed):
    builtins = TrainContextBuilder(_full_cfg(tmp_path)).default_callbacks()
    random.Random(seed).shuffle(builtins)
    ordered = list(CallbackList(builtins))
    ranks = [ROLES.index(cb.role) for cb in ordered]
    assert ranks == sorted(ranks)
    # Callbacks of one role keep the order they were given in (the sort is stable).
    for role in ROLES:
        assert [cb for cb in ordered if cb.role == role] == [
            cb for cb in builtins if cb.role == role
        ]


def test_every_registered_builtin_declares_a_role():
    for name in CALLBACKS.names():
        assert CALLBACKS.get(name).role in ROLES[:-1], name


def test_user_callbacks_run_last_unless_they_declare_a_role(tmp_path):
    mine, logger = Mine(), MyLogger()
    # As the builder passes them: the built-ins, then the user's callbacks.
    builtins = TrainContextBuilder(_full_cfg(tmp_path)).default_callbacks()
    ctx_callbacks = CallbackList([*builtins, mine, logger])
    names = _names(ctx_callbacks)
    assert names[-1] == "Mine" and mine.role == "user"
    # A declared role places it among the built-ins: after theirs of the same role.
    assert (
        names.index("MLflowTracker") < names.index("MyLogger") < names.index("PeriodicCheckpoint")
    )


def test_an_unknown_role_is_an_error():
    class Odd(TrainCallback):
        role = "whenever"

    with pytest.raises(ConfigError, match="Odd.role 'whenever' is not allowed"):
        CallbackList([Odd()])
