"""The callback interface (Lightning-style hook names) and the list that dispatches to them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kronos_engine.errors import ConfigError

if TYPE_CHECKING:
    from kronos_engine.context import TrainContext
    from kronos_engine.strategy import StepOutput

HOOKS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_batch_begin",
    "on_batch_end",
    "on_optimizer_step",
    "on_step_end",
    "on_validation_end",
    "on_epoch_end",
    "on_train_end",
    "on_error",
)

# When a callback's hooks run, relative to the others': `CallbackList` orders callbacks by the
# position of their `role` in this tuple (stably: callbacks of one role keep the order they were
# given in, built-ins before user callbacks). Each role names what it must follow or precede.
ROLES = (
    "model_setup",  # changes the model before training (activation checkpointing)
    "grad_clip",  # clips the complete gradient and measures its norm (`ctx.grad_norm`)
    "grad_guard",  # checks loss and that norm before the update (non-finite guard)
    "signals",  # marks a stop (SIGTERM/SIGINT) before the checkpoint saves that step
    "weight_averaging",  # updates the weights validation scores (EMA) before validation
    "validation",  # runs validation, sets `ctx.val_metrics`, fires `on_validation_end`
    "validation_metrics",  # adds metrics to a validation before selection sees them
    "selection",  # acts on validation metrics: best/, early stopping
    "logging",  # metrics.jsonl, trackers: before the checkpoint, so a crash between the two
    # loses the checkpoint too and the resumed run re-writes the record (never a gap)
    "checkpoint",  # resumable checkpoints of everything above
    "summary",  # summary.json
    "display",  # progress bar
    "user",  # the default for callbacks that declare no role: after everything built in
)


class TrainCallback:
    """Override only the hooks you need. `state_dict` is saved in resumable checkpoints.

    `role` (one of `ROLES`) places the callback among the others; a user callback runs after
    every built-in unless it declares an earlier role (e.g. `role = "logging"` to run before the
    checkpoint is written).
    """

    role: str = "user"
    # A `validation_metrics` callback names the metrics it adds to `ctx.val_metrics`, so a
    # `best_metric` typo is refused before the run; None: not said, checked at the first
    # validation instead. (A callback of a later role adds them after selection has run.)
    val_metric_names: tuple[str, ...] | None = None

    def on_train_begin(self, ctx: TrainContext) -> None: ...

    def on_epoch_begin(self, ctx: TrainContext) -> None: ...

    def on_batch_begin(self, ctx: TrainContext, batch: Any) -> None: ...

    def on_batch_end(self, ctx: TrainContext, output: StepOutput) -> None: ...

    def on_optimizer_step(self, ctx: TrainContext) -> None:
        """Gradients are complete (all micro-batches, all ranks) and not yet applied."""

    def on_step_end(self, ctx: TrainContext) -> None:
        """After `optimizer.step()` and the scheduler step; `ctx.global_step` already counts it."""

    def on_validation_end(self, ctx: TrainContext) -> None: ...

    def on_epoch_end(self, ctx: TrainContext) -> None: ...

    def on_train_end(self, ctx: TrainContext) -> None: ...

    def on_error(self, ctx: TrainContext, error: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state restored on resume; a callback persists its own state here
        (`TrainContext.counters()` holds only the loop's position)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called on resume while the run is being built, before `on_train_begin`; values other
        callbacks read from the context (e.g. `ctx.best_metric`) are published to it in
        `on_train_begin`, the first hook of the run."""

    def save_files(self, ctx: TrainContext, directory: Path) -> None:
        """Tensors to keep across a resume (e.g. averaged weights): write them into the checkpoint
        folder being assembled (rank 0, safetensors, no pickle); the manifest then covers them."""

    def load_files(self, ctx: TrainContext, directory: Path) -> None:
        """Read back what `save_files` wrote (every rank, on resume, before training starts)."""

    @property
    def state_key(self) -> str:
        return type(self).__name__


def role_rank(callback: TrainCallback) -> int:
    """The position of `callback.role` in `ROLES`."""
    role = getattr(callback, "role", "user")
    if role not in ROLES:
        raise ConfigError(
            f"callbacks: {type(callback).__name__}.role '{role}' is not allowed; choose one of "
            f"{list(ROLES)}"
        )
    return ROLES.index(role)


class CallbackList:
    """Calls a hook on every callback, in the order of their roles (see `ROLES`)."""

    def __init__(self, callbacks: list[TrainCallback]) -> None:
        self.callbacks = sorted(callbacks, key=role_rank)  # stable: ties keep the given order

    def __iter__(self):
        return iter(self.callbacks)

    def fire(self, hook: str, ctx: TrainContext, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(ctx, *args)

    def fire_error(self, ctx: TrainContext, error: BaseException) -> None:
        """Every callback sees the error even if another one fails while handling it."""
        for cb in self.callbacks:
            try:
                cb.on_error(ctx, error)
            except Exception as exc:  # noqa: BLE001 - never mask the original error
                import logging

                logging.getLogger("kronos_engine").error("%s.on_error failed: %s", cb, exc)

    def find(self, cls: type) -> TrainCallback | None:
        return next((cb for cb in self.callbacks if isinstance(cb, cls)), None)

    def state_dict(self) -> dict[str, Any]:
        return {cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cb in self.callbacks:
            if cb.state_key in state:
                cb.load_state_dict(state[cb.state_key])

    def save_files(self, ctx: TrainContext, directory: Path) -> None:
        for cb in self.callbacks:
            cb.save_files(ctx, directory)

    def load_files(self, ctx: TrainContext, directory: Path) -> None:
        for cb in self.callbacks:
            cb.load_files(ctx, directory)
