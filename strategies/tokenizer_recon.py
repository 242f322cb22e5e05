"""Tokenizer fine-tuning: reconstruction through both decoder paths plus the BSQ loss."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from kronos_engine.context import TrainContext
from kronos_engine.registry import STRATEGIES
from kronos_engine.strategy import StepOutput, Strategy, ValOutput
from kronos_engine.training.model_factory import build_tokenizer_model


@STRATEGIES.register("tokenizer_recon")
class TokenizerReconStrategy(Strategy):
    """`loss = (MSE(z_pre, x) + MSE(z, x) + bsq_loss) / 2`; validation `MSE(z, x)` per sample."""

    metric_name = "val_recon_mse"
    val_metric_names = ()
    train_type = "tokenizer"

    def build_model(self) -> nn.Module:
        return build_tokenizer_model(self.cfg)

    def training_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> StepOutput:
        x = batch[0]
        (z_pre, z), bsq_loss, _, _ = model(x)
        recon_pre = F.mse_loss(z_pre.float(), x)
        recon_all = F.mse_loss(z.float(), x)
        loss = (recon_pre + recon_all + bsq_loss.float()) / 2
        parts = {
            "recon_loss_pre": recon_pre.detach(),
            "recon_loss_all": recon_all.detach(),
            "bsq_loss": bsq_loss.detach(),
        }
        return StepOutput(loss=loss, parts=parts)

    def validation_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> ValOutput:
        x = batch[0]
        (_, z), _, _, _ = model(x)
        per_sample = ((z.float() - x) ** 2).flatten(1).mean(dim=1)
        return ValOutput(metric_sum=per_sample.sum(), count=x.shape[0])
