"""Kronos: the autoregressive predictor over hierarchical (s1, s2) tokens.

A causal transformer predicts the next s1 token; a dependency-aware cross-attention layer
then predicts s2 conditioned on that s1. Attribute names follow the public code so the public
checkpoints load with `strict=True`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kronos_engine.models.io import PretrainedMixin
from kronos_engine.models.kv_cache import KVCache
from kronos_engine.models.layers import (
    MultiHeadAttentionWithRoPE,
    RMSNorm,
    TransformerBlock,
    default_embed_std,
    init_weights,
    set_activation_checkpointing,
)

# Rows of each calendar table, in the stamp column order [minute, hour, weekday, day, month].
TIME_FEATURES: tuple[tuple[str, int], ...] = (
    ("minute_embed", 60),
    ("hour_embed", 24),
    ("weekday_embed", 7),
    ("day_embed", 32),
    ("month_embed", 13),
)
DEP_LAYER_HEADS = 4  # fixed in the public code whatever n_heads is


class HierarchicalEmbedding(nn.Module):
    """Embed (s1, s2) pairs: scaled embeddings of both, concatenated and fused."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int = 256) -> None:
        super().__init__()
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2**s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2**s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)

    def forward(
        self, token_ids: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]
    ) -> torch.Tensor:
        s1_ids, s2_ids = token_ids
        scale = math.sqrt(self.d_model)
        s1_emb = self.emb_s1(s1_ids) * scale
        s2_emb = self.emb_s2(s2_ids) * scale
        return self.fusion_proj(torch.cat([s1_emb, s2_emb], dim=-1))


class FixedEmbedding(nn.Module):
    """Frozen sinusoidal table, stored as `emb.weight` (a parameter without grad) as public."""

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        position = torch.arange(c_in, dtype=torch.float32)[:, None]
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        table = torch.zeros(c_in, d_model)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term)[:, : d_model // 2]
        self.emb = nn.Embedding(c_in, d_model)
        self.emb.weight = nn.Parameter(table, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).detach()


class TemporalEmbedding(nn.Module):
    """Sum of minute/hour/weekday/day/month embeddings; learnable or fixed sinusoidal."""

    def __init__(self, d_model: int, learn_pe: bool) -> None:
        super().__init__()
        embed = nn.Embedding if learn_pe else FixedEmbedding
        for name, rows in TIME_FEATURES:
            self.add_module(name, embed(rows, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        minute = self.minute_embed(x[..., 0])
        hour = self.hour_embed(x[..., 1])
        weekday = self.weekday_embed(x[..., 2])
        day = self.day_embed(x[..., 3])
        month = self.month_embed(x[..., 4])
        # Same summation order as the public code, so float rounding matches too.
        return hour + weekday + day + month + minute


class DependencyAwareLayer(nn.Module):
    """Cross-attention from the s1 embedding (query) to the hidden states, then residual norm."""

    def __init__(
        self,
        d_model: int,
        n_heads: int = DEP_LAYER_HEADS,
        attn_dropout_p: float = 0.0,
        resid_dropout_p: float = 0.0,
    ) -> None:
        super().__init__()
        self.cross_attn = MultiHeadAttentionWithRoPE(
            d_model, n_heads, attn_dropout_p, resid_dropout_p
        )
        self.norm = RMSNorm(d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        sibling_embed: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        attn = self.cross_attn(
            sibling_embed,
            hidden_states,
            hidden_states,
            key_padding_mask=key_padding_mask,
            causal=causal,
        )
        # With a length-1 query (inference) the attention output broadcasts over positions.
        return self.norm(hidden_states + attn)

    def forward_cached(
        self,
        new_hidden: torch.Tensor,
        sibling_embed: torch.Tensor,
        cache: KVCache,
        layer: int,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last position of `forward` at inference (a length-1 sibling query), reading
        the hidden states of earlier tokens from `cache`."""
        if sibling_embed.shape[1] != 1:
            raise ValueError("cached s2 decoding takes one sibling token per row")
        attn = self.cross_attn.forward_cached(
            sibling_embed, new_hidden, cache, layer, key_padding_mask=key_padding_mask, causal=False
        )
        return self.norm(new_hidden[:, -1:] + attn)


class DualHead(nn.Module):
    """Logit projections for s1 (`forward`) and s2 (`cond_forward`), and their loss."""

    def __init__(self, s1_bits: int, s2_bits: int, d_model: int) -> None:
        super().__init__()
        self.vocab_s1 = 2**s1_bits
        self.vocab_s2 = 2**s2_bits
        self.proj_s1 = nn.Linear(d_model, self.vocab_s1)
        self.proj_s2 = nn.Linear(d_model, self.vocab_s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_s1(x)

    def cond_forward(self, x2: torch.Tensor) -> torch.Tensor:
        return self.proj_s2(x2)

    def compute_loss(
        self,
        s1_logits: torch.Tensor,
        s2_logits: torch.Tensor,
        s1_targets: torch.Tensor,
        s2_targets: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return `((ce1 + ce2) / 2, ce1, ce2)`, mean cross-entropy per head (with
        `label_smoothing`, against targets mixed with the uniform distribution; 0 is the public
        loss, bit for bit).

        `padding_mask` uses the same convention as `forward` (1/True = real token) and limits
        the mean to real positions. (The public code selected `padding_mask == 0` here, i.e.
        the padding, contradicting its own forward convention.)
        """
        if padding_mask is not None:
            valid = padding_mask.bool()
            s1_logits, s2_logits = s1_logits[valid], s2_logits[valid]
            s1_targets, s2_targets = s1_targets[valid], s2_targets[valid]
        ce_s1 = F.cross_entropy(
            s1_logits.reshape(-1, self.vocab_s1),
            s1_targets.reshape(-1),
            label_smoothing=label_smoothing,
        )
        ce_s2 = F.cross_entropy(
            s2_logits.reshape(-1, self.vocab_s2),
            s2_targets.reshape(-1),
            label_smoothing=label_smoothing,
        )
        return (ce_s1 + ce_s2) / 2, ce_s1, ce_s2


class Kronos(PretrainedMixin):
    """Predictor with the public constructor keywords, module tree and methods.

    Beyond the public code: `padding_mask` really works together with the causal mask, and
    the cross-attention's causality can be forced (`causal_cross_attn` / `causal`); None keeps
    the public behaviour (causal in training mode, not causal in eval mode).
    """

    def __init__(
        self,
        s1_bits: int,
        s2_bits: int,
        n_layers: int,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        ffn_dropout_p: float,
        attn_dropout_p: float,
        resid_dropout_p: float,
        token_dropout_p: float,
        learn_te: bool,
    ) -> None:
        super().__init__()
        self._store_config(locals())
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.n_layers = n_layers
        self.d_model = d_model
        self.n_heads = n_heads
        self.ff_dim = ff_dim
        self.ffn_dropout_p = ffn_dropout_p
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout_p = resid_dropout_p
        self.token_dropout_p = token_dropout_p
        self.learn_te = learn_te
        self.s1_vocab_size = 2**s1_bits

        self.token_drop = nn.Dropout(token_dropout_p)
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.transformer = nn.ModuleList(
            TransformerBlock(
                d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p
            )
            for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)
        init_weights(self, default_embed_std(d_model))

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Trade compute for memory in training: recompute blocks in the backward pass."""
        set_activation_checkpointing(self, enabled)

    def forward(
        self,
        s1_ids: torch.Tensor,
        s2_ids: torch.Tensor,
        stamp: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        use_teacher_forcing: bool = False,
        s1_targets: torch.Tensor | None = None,
        causal_cross_attn: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(s1_logits, s2_logits)`, both `(B, L, vocab)`.

        s2 is conditioned on `s1_targets` with teacher forcing, else on s1 sampled from the
        predicted distribution (as the public fine-tuning script trains).
        """
        s1_logits, hidden = self.decode_s1(s1_ids, s2_ids, stamp, padding_mask)
        if use_teacher_forcing:
            if s1_targets is None:
                raise ValueError("use_teacher_forcing=True needs s1_targets")
            sibling_ids = s1_targets
        else:
            probs = F.softmax(s1_logits.detach().float(), dim=-1)
            sibling_ids = torch.multinomial(probs.reshape(-1, self.s1_vocab_size), 1)
            sibling_ids = sibling_ids.view(s1_ids.shape)
        s2_logits = self.decode_s2(hidden, sibling_ids, padding_mask, causal=causal_cross_attn)
        return s1_logits, s2_logits

    def decode_s1(
        self,
        s1_ids: torch.Tensor,
        s2_ids: torch.Tensor,
        stamp: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(s1_logits, hidden)`; `hidden` is the context that `decode_s2` attends to.

        With a `cache` only the new tokens are given (and returned); earlier ones are read
        from the cache, `padding_mask` then covers cached and new tokens, and `positions`
        `(B, n)` are the tokens' rotary positions (default: their places in the cache). The
        caller commits the new tokens with `cache.advance(n)` after `decode_s2`.
        """
        x = self.embedding([s1_ids, s2_ids])
        if stamp is not None:
            x = x + self.time_emb(stamp)
        x = self.token_drop(x)
        if cache is None:
            for layer in self.transformer:
                x = layer(x, key_padding_mask=padding_mask)
        else:
            if positions is None:
                n = s1_ids.shape[1]
                positions = torch.arange(cache.length, cache.length + n, device=x.device)
                positions = positions.expand(s1_ids.shape[0], n)
            for i, layer in enumerate(self.transformer):
                x = layer.forward_cached(x, cache, i, positions, padding_mask)
        x = self.norm(x)
        return self.head(x), x

    def decode_s2(
        self,
        context: torch.Tensor,
        s1_ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        causal: bool | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """s2 logits given the hidden context and the s1 tokens at the predicted positions.

        `causal=None` keeps the public behaviour (causal only in training mode). Pass True
        for a leak-free evaluation of a teacher-forced sequence: position t then never sees
        hidden states after t. With a `cache` (inference), `context` holds only the new
        tokens' hidden states, `s1_ids` is one token per row, and the logits of the last
        position `(B, 1, vocab)` are returned.
        """
        sibling = self.embedding.emb_s1(s1_ids)
        if cache is not None:
            x2 = self.dep_layer.forward_cached(
                context, sibling, cache, self.n_layers, key_padding_mask=padding_mask
            )
            return self.head.cond_forward(x2)
        causal = self.training if causal is None else causal
        x2 = self.dep_layer(context, sibling, key_padding_mask=padding_mask, causal=causal)
        return self.head.cond_forward(x2)
