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


class WarmupRestarts:
    """SGDR (Loshchilov & Hutter): linear warm-up, then cosine cycles from lr to zero that restart
    at lr; the first cycle lasts `cycle_steps` (default: a quarter of the post-warm-up steps) and
    each next one `cycle_mult` times longer. Closed form in the step, so resume re-enters it."""

    def __init__(
        self,
        total_steps: int,
        warmup_ratio: float,
        div_factor: float,
        cycle_steps: int | None,
        cycle_mult: int,
    ) -> None:
        self.total = max(total_steps, 1)
        self.warmup = max(int(round(warmup_ratio * self.total)), 1)
        self.start = 1.0 / div_factor
        self.cycle = cycle_steps or max((self.total - self.warmup) // 4, 1)
        self.mult = cycle_mult

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        t, length = step - self.warmup, self.cycle
        while t >= length:  # at most log(total) iterations with mult > 1
            t -= length
            length *= self.mult
        return 0.5 * (1.0 + math.cos(math.pi * t / length))


class WarmupStableDecay:
    """WSD: linear warm-up, the peak lr held, then a linear decay to zero over the last
    `decay_ratio` of the run (the decay can be re-run from a stable-phase checkpoint)."""

    def __init__(
        self, total_steps: int, warmup_ratio: float, div_factor: float, decay_ratio: float
    ) -> None:
        self.total = max(total_steps, 1)
        self.warmup = max(int(round(warmup_ratio * self.total)), 1)
        self.start = 1.0 / div_factor
        self.decay_start = max(self.total - int(round(decay_ratio * self.total)), self.warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        if step < self.decay_start:
            return 1.0
        return max(1.0 - (step - self.decay_start) / max(self.total - self.decay_start, 1), 0.0)


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
    if cfg.scheduler == "sgdr":
        schedule = WarmupRestarts(
            total_steps, cfg.warmup_ratio, cfg.div_factor, cfg.sgdr_cycle_steps, cfg.sgdr_cycle_mult
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if cfg.scheduler == "wsd":
        schedule = WarmupStableDecay(
            total_steps, cfg.warmup_ratio, cfg.div_factor, cfg.wsd_decay_ratio
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)
