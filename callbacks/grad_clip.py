"""Gradient-norm clipping (tokenizer 2.0, predictor 3.0 by default)."""

from __future__ import annotations

import math

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS


@CALLBACKS.register("grad_clip")
class GradClipCallback(TrainCallback):
    """Clips the complete (all-reduced) gradient and records its norm in `ctx.grad_norm`.

    `max_norm=None` or `inf` only measures the norm.
    """

    role = "grad_clip"

    def __init__(self, max_norm: float | None = None) -> None:
        self.max_norm = math.inf if max_norm is None or max_norm <= 0 else float(max_norm)

    def on_optimizer_step(self, ctx: TrainContext) -> None:
        norm = ctx.executor.clip_grad_norm(ctx.model, self.max_norm)
        ctx.grad_norm = float(norm.item())
