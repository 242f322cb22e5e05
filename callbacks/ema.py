"""Exponential moving average of the weights (`ema: true`), validated and saved as `best/`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.errors import ConfigError, ResumeError
from kronos_engine.registry import CALLBACKS

EMA_FILE = "ema.safetensors"


@CALLBACKS.register("ema")
class EMA(TrainCallback):
    """`ema = decay * ema + (1 - decay) * weights` after every applied optimizer step (a skipped
    non-finite step is not averaged in), through `torch.optim.swa_utils.AveragedModel`; buffers
    are averaged too. The averaged copy becomes `ctx.eval_model`: validation, early stopping and
    `best/` see the EMA weights, training continues on the raw ones. Its weights are saved in
    every checkpoint (`ema.safetensors`), so a resumed run averages on exactly."""

    role = "weight_averaging"

    def __init__(self, decay: float = 0.999) -> None:
        # `TrainConfig.validate` checks the config's value; this guards one built in Python.
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema_decay: must lie in (0, 1), got {decay}")
        self.decay = decay
        self.averaged: AveragedModel | None = None

    def _ensure(self, ctx: TrainContext) -> AveragedModel:
        if self.averaged is None:
            averaged = AveragedModel(
                ctx.unwrapped_model,
                multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                use_buffers=True,
            )
            # A compiled model's copy would share its compiled call; the copy runs eagerly.
            averaged.module._compiled_call_impl = None
            for p in averaged.parameters():
                p.requires_grad_(False)
            self.averaged = averaged
            ctx.eval_model = averaged.module
        return self.averaged

    def on_train_begin(self, ctx: TrainContext) -> None:
        self._ensure(ctx)

    def on_step_end(self, ctx: TrainContext) -> None:
        if ctx.skip_step:
            return
        with torch.no_grad():
            self._ensure(ctx).update_parameters(ctx.unwrapped_model)

    def save_files(self, ctx: TrainContext, directory: Path) -> None:
        state = self._ensure(ctx).state_dict()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, directory / EMA_FILE
        )

    def load_files(self, ctx: TrainContext, directory: Path) -> None:
        path = directory / EMA_FILE
        if not path.is_file():
            raise ResumeError(
                f"{directory}: no {EMA_FILE}; the checkpoint was written without ema, "
                "resume it with ema=false"
            )
        averaged = self._ensure(ctx)
        try:
            averaged.load_state_dict(load_file(str(path), device=str(ctx.executor.device)))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ResumeError(f"{path}: does not fit the model ({first})") from None
