"""Predictor fine-tuning: next-token cross-entropy on both token levels of a frozen tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kronos_engine.context import TrainContext
from kronos_engine.fsio import write_dir_atomically
from kronos_engine.layout import RunLayout
from kronos_engine.models.fingerprint import weights_fingerprint, write_tokenizer_record
from kronos_engine.registry import STRATEGIES
from kronos_engine.strategy import StepOutput, Strategy, ValOutput
from kronos_engine.training.model_factory import (
    build_predictor_model,
    check_bits_match,
    load_frozen_tokenizer,
)


@STRATEGIES.register("predictor_next_token")
class PredictorNextTokenStrategy(Strategy):
    """Dual-head CE. Training conditions the s2 head on a sampled s1 (public recipe) or, with
    `teacher_forcing`, on the true s1. Validation is deterministic and leak-free: teacher forcing
    and a causal cross-attention even in eval mode. `label_smoothing` only smooths the training
    loss: validation reports the plain cross-entropy, comparable across settings."""

    metric_name = "val_loss"
    val_metric_names = ("val_s1_loss", "val_s2_loss")
    train_type = "predictor"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.tokenizer: nn.Module | None = None
        self._tokenizer_sha256: str | None = None

    def build_model(self) -> nn.Module:
        self.tokenizer = load_frozen_tokenizer(self.cfg)
        model = build_predictor_model(self.cfg)
        check_bits_match(self.tokenizer, model, self.cfg)
        return model

    def setup(self, ctx: TrainContext) -> None:
        if self.tokenizer is None:
            self.tokenizer = load_frozen_tokenizer(self.cfg)
        self.tokenizer.to(ctx.executor.device).eval()

    def write_run_files(self, output_dir: Path) -> None:
        """Keep the exact tokenizer this predictor learns to read: forecasting from the run
        (`KronosPredictor.from_run`) must decode with it even if its source folder changes."""
        target = RunLayout(output_dir).frozen_tokenizer
        if target.exists() or self.tokenizer is None:
            return  # a resumed run keeps the tokenizer it started with
        write_dir_atomically(target, self.tokenizer.save_pretrained)

    def write_best_files(self, folder: Path) -> None:
        """Pair `best/` with its tokenizer by fingerprint: forecasting refuses another one
        (its token ids would mean something else)."""
        if self.tokenizer is None:
            return
        if self._tokenizer_sha256 is None:  # frozen: hashed once
            self._tokenizer_sha256 = weights_fingerprint(self.tokenizer)
        write_tokenizer_record(
            folder, self._tokenizer_sha256, str(self.cfg.resolved_tokenizer_path)
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids in full precision, so bf16 training sees exactly the fp32 tokens."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            s1, s2 = self.tokenizer.encode(x.float(), half=True)
        return s1, s2

    def _forward(self, model: nn.Module, batch: Any, teacher_forcing: bool, causal: bool | None):
        """Encode the window, shift by one token and run the predictor: (logits, targets)."""
        x, stamp = batch[0], batch[1]
        s1, s2 = self.encode(x)
        s1_t, s2_t = s1[:, 1:], s2[:, 1:]
        logits = model(
            s1[:, :-1],
            s2[:, :-1],
            stamp[:, :-1],
            use_teacher_forcing=teacher_forcing,
            s1_targets=s1_t,
            causal_cross_attn=causal,
        )
        return logits, (s1_t, s2_t)

    def training_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> StepOutput:
        # causal=None: the public behaviour (the cross-attention is causal in training mode).
        (s1_logits, s2_logits), (s1_t, s2_t) = self._forward(
            model, batch, self.cfg.teacher_forcing, causal=None
        )
        head = ctx.unwrapped_model.head
        loss, s1_loss, s2_loss = head.compute_loss(
            s1_logits.float(),
            s2_logits.float(),
            s1_t,
            s2_t,
            label_smoothing=self.cfg.label_smoothing,
        )
        parts = {"s1_loss": s1_loss.detach(), "s2_loss": s2_loss.detach()}
        return StepOutput(loss=loss, parts=parts)

    def validation_step(self, model: nn.Module, batch: Any, ctx: TrainContext) -> ValOutput:
        (s1_logits, s2_logits), (s1_t, s2_t) = self._forward(
            model, batch, teacher_forcing=True, causal=True
        )
        ce1 = _per_sample_ce(s1_logits, s1_t)
        ce2 = _per_sample_ce(s2_logits, s2_t)
        per_sample = (ce1 + ce2) / 2
        parts = {"val_s1_loss": ce1.sum(), "val_s2_loss": ce2.sum()}
        return ValOutput(metric_sum=per_sample.sum(), count=s1_t.shape[0], part_sums=parts)


def _per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return ce.mean(dim=1)
