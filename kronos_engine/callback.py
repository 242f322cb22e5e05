"""The callback interface (Lightning-style hook names) and the list that dispatches to them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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


class TrainCallback:
    """Override only the hooks you need. `state_dict` is saved in resumable checkpoints."""

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
        """JSON-serialisable state restored on resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def save_files(self, ctx: TrainContext, directory: Path) -> None:
        """Tensors to keep across a resume (e.g. averaged weights): write them into the checkpoint
        folder being assembled (rank 0, safetensors, no pickle); the manifest then covers them."""

    def load_files(self, ctx: TrainContext, directory: Path) -> None:
        """Read back what `save_files` wrote (every rank, on resume, before training starts)."""

    @property
    def state_key(self) -> str:
        return type(self).__name__


class CallbackList:
    """Calls a hook on every callback, in order."""

    def __init__(self, callbacks: list[TrainCallback]) -> None:
        self.callbacks = list(callbacks)

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
