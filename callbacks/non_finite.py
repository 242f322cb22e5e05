"""Stop (or skip the step) when the loss or the gradient is NaN/inf, before weights change."""

from __future__ import annotations

import logging
import math

from kronos_engine.callback import TrainCallback
from kronos_engine.config import NAN_POLICIES
from kronos_engine.context import TrainContext
from kronos_engine.errors import ConfigError, NonFiniteError
from kronos_engine.registry import CALLBACKS

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("non_finite_guard")
class NonFiniteGuard(TrainCallback):
    """Runs after clipping (which measures the norm). Policy `stop` raises, `skip` drops the
    update and counts it in `ctx.skipped_steps`."""

    role = "grad_guard"

    def __init__(self, policy: str = "stop") -> None:
        # `TrainConfig.validate` checks the config's value; this guards one built in Python.
        if policy not in NAN_POLICIES:
            raise ConfigError(
                f"nan_policy: '{policy}' is not allowed; choose one of {list(NAN_POLICIES)}"
            )
        self.policy = policy

    def on_optimizer_step(self, ctx: TrainContext) -> None:
        what = self._what_is_bad(ctx)
        if what is None:
            return
        step = ctx.global_step + 1
        if self.policy == "skip":
            log.warning("step %d: %s; skipping this update (nan_policy=skip)", step, what)
            ctx.skip_step = True
            return
        raise NonFiniteError(
            f"step {step} (epoch {ctx.epoch}): {what}; stopped before the update, the last "
            f"checkpoint is intact (set nan_policy=skip to drop such steps instead)"
        )

    @staticmethod
    def _what_is_bad(ctx: TrainContext) -> str | None:
        if ctx.last_loss is not None and not math.isfinite(ctx.last_loss):
            return f"loss is {ctx.last_loss}"
        norm = ctx.grad_norm
        if norm is None:
            norm = float(ctx.executor.clip_grad_norm(ctx.model, math.inf).item())
        if not math.isfinite(norm):
            return f"gradient norm is {norm}"
        return None
