"""Autoregressive forecasting with a tokenizer and a predictor (the public inference loop).

Numerically the same as the public `auto_regressive_inference` (its `preds`), with an explicit
`torch.Generator` for reproducible sampling and a plain growing token buffer instead of the
public rolling one (the window it feeds the model is identical).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .predictor import Kronos
from .tokenizer import KronosTokenizer


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k (if `top_k > 0`), else outside the nucleus, to -inf.

    Top-k wins over top-p, as in the public code; the most likely token always survives.
    """
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        # Shift right so that the token crossing the threshold is kept, and never drop the first.
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        return logits.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row of `(B, V)` logits; returns `(B, 1)` long ids.

    `top_k=1` makes the draw deterministic (greedy).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout, public cross-attention behaviour), then restore."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _check_inputs(
    x: torch.Tensor, x_stamp: torch.Tensor, y_stamp: torch.Tensor, max_context: int, pred_len: int
) -> None:
    if x.dim() != 3 or x_stamp.dim() != 3 or y_stamp.dim() != 3:
        raise ValueError("x, x_stamp and y_stamp must be (batch, length, features) tensors")
    if x_stamp.shape[:2] != x.shape[:2]:
        raise ValueError(f"x_stamp {tuple(x_stamp.shape)} does not match x {tuple(x.shape)}")
    if y_stamp.shape[0] != x.shape[0] or y_stamp.shape[1] != pred_len:
        raise ValueError(f"y_stamp {tuple(y_stamp.shape)} must be (batch, pred_len={pred_len}, 5)")
    if max_context < 1 or pred_len < 1:
        raise ValueError("max_context and pred_len must be >= 1")


@torch.no_grad()
def auto_regressive_inference(
    tokenizer: KronosTokenizer,
    model: Kronos,
    x: torch.Tensor,
    x_stamp: torch.Tensor,
    y_stamp: torch.Tensor,
    max_context: int,
    pred_len: int,
    clip: float = 5.0,
    T: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.99,
    sample_count: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Forecast `pred_len` steps after the normalised context `x` `(B, C, d_in)`.

    Returns the tokenizer's reconstruction of the last `min(C + pred_len, max_context)`
    tokens (context and generated), averaged over `sample_count` samples:
    `(B, min(C + pred_len, max_context), d_in)`, still normalised. The forecast is its last
    `pred_len` rows; the caller de-normalises.
    """
    _check_inputs(x, x_stamp, y_stamp, max_context, pred_len)
    if sample_count < 1:
        raise ValueError(f"sample_count must be >= 1, got {sample_count}")
    with _eval_mode(tokenizer, model):
        batch, context_len = x.shape[:2]
        x = torch.clamp(x, -clip, clip).repeat_interleave(sample_count, dim=0)
        stamps = torch.cat([x_stamp, y_stamp], dim=1).repeat_interleave(sample_count, dim=0)
        s1_ctx, s2_ctx = tokenizer.encode(x, half=True)

        total = context_len + pred_len
        s1 = s1_ctx.new_zeros(s1_ctx.shape[0], total)
        s2 = s2_ctx.new_zeros(s2_ctx.shape[0], total)
        s1[:, :context_len], s2[:, :context_len] = s1_ctx, s2_ctx
        for end in range(context_len, total):
            start = max(0, end - max_context)
            s1_logits, hidden = model.decode_s1(
                s1[:, start:end], s2[:, start:end], stamps[:, start:end]
            )
            next_s1 = sample_from_logits(s1_logits[:, -1], T, top_k, top_p, generator)
            s2_logits = model.decode_s2(hidden, next_s1, causal=False)
            next_s2 = sample_from_logits(s2_logits[:, -1], T, top_k, top_p, generator)
            s1[:, end], s2[:, end] = next_s1[:, 0], next_s2[:, 0]

        start = max(0, total - max_context)
        z = tokenizer.decode([s1[:, start:], s2[:, start:]], half=True)
        return z.reshape(batch, sample_count, *z.shape[1:]).mean(dim=1)
