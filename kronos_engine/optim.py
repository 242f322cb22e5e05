"""Optimizer and learning-rate schedules (public recipe: AdamW + OneCycleLR)."""

from __future__ import annotations

import math

import torch
from torch import nn

from kronos_engine.config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over every trainable parameter, as the public fine-tuning scripts do."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=cfg.resolved_lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
    )


class WarmupCosine:
    """Linear warm-up from lr/div_factor to lr, then cosine decay to zero."""

    def __init__(self, total_steps: int, warmup_ratio: float, div_factor: float) -> None:
        self.total = max(total_steps, 1)
        self.warmup = max(int(round(warmup_ratio * self.total)), 1)
        self.start = 1.0 / div_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _constant(step: int) -> float:
    return 1.0


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """One scheduler step per optimizer step; `total_steps` covers the whole run."""
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.resolved_lr,
            total_steps=max(total_steps, 1),
            pct_start=cfg.warmup_ratio,
            div_factor=cfg.div_factor,
        )
    if cfg.scheduler == "cosine":
        schedule = WarmupCosine(total_steps, cfg.warmup_ratio, cfg.div_factor)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)
