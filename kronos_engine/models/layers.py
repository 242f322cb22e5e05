"""Building blocks shared by the Kronos tokenizer and predictor.

Module and attribute names mirror the public implementation so that the state-dict keys of
the public checkpoints (`self_attn.q_proj.weight`, `rotary.inv_freq`, `ffn.w1.weight`, ...)
load unchanged. Each block exists once and is used by both models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from kronos_engine.models.kv_cache import KVCache


class RMSNorm(nn.Module):
    """RMS normalisation computed in float32 so that bf16 activations keep their precision."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU feed-forward: `w2(silu(w1 x) * w3 x)`, bias-free as in the public checkpoints."""

    def __init__(self, d_model: int, ff_dim: int, ffn_dropout_p: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, ff_dim, bias=False)
        self.w3 = nn.Linear(d_model, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, d_model, bias=False)
        self.ffn_dropout = nn.Dropout(ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryPositionalEmbedding(nn.Module):
    """Rotary embedding on the head dimension.

    `inv_freq` is a *persistent* buffer because the public checkpoints contain it. As in the
    public code the table is built for the query length and applied to query and key alike;
    a length-1 query (decoding s2 at inference) is position 0, i.e. no rotation at all.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {dim}")
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def cos_sin(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(n, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = q.shape[-2]
        if n == 1:
            return q, k
        if k.shape[-2] != n:
            raise ValueError(
                f"rotary embedding needs equal query and key lengths (or a length-1 query), "
                f"got {n} and {k.shape[-2]}"
            )
        cos, sin = self.cos_sin(n, q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate `(B, H, L, D)` by explicit per-row positions `(B, L)`.

        Incremental decoding needs this: a token keeps the rotation of its position in the
        window when it is computed alone, and left-padded rows count from their first real
        token. The angles are the same float32 products as `cos_sin`, so equal positions give
        bit-identical rotations.
        """
        freqs = positions.to(self.inv_freq.dtype)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        return x * cos + _rotate_half(x) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def build_attention_mask(
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor | None, bool, torch.Tensor | None]:
    """Combine the causal and key-padding constraints into one boolean SDPA mask.

    Returns `(attn_mask, is_causal, valid_rows)`. Without padding the fast `is_causal` path is
    used. A causal mask is aligned bottom-right (query i sits at key position
    `k_len - q_len + i`), which equals the usual mask for equal lengths and lets a length-1
    query see the whole context. Query rows left without any key (e.g. a left-padded first
    position) are opened up to avoid NaN and reported in `valid_rows` so that their output
    can be zeroed.
    """
    if causal and q_len == 1:
        causal = False  # a single query sits at the last key position and sees every key
    if key_padding_mask is None:
        if not causal:
            return None, False, None
        if q_len == k_len:
            return None, True, None
        return _causal_mask(q_len, k_len, device)[None, None], False, None
    if key_padding_mask.shape[-1] != k_len:
        raise ValueError(
            f"padding mask covers {key_padding_mask.shape[-1]} keys, but there are {k_len}"
        )
    mask = key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
    if causal:
        mask = mask & _causal_mask(q_len, k_len, device)[None, None]
    else:
        mask = mask.expand(-1, -1, q_len, -1)
    valid_rows = mask.any(dim=-1, keepdim=True)
    return mask | ~valid_rows, False, valid_rows


def _causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    ones = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=k_len - q_len)


class MultiHeadAttentionWithRoPE(nn.Module):
    """Multi-head attention with rotary embedding, used for self- and cross-attention.

    `key`/`value` default to `query` (self-attention). `key_padding_mask` is `(B, K)` with
    1/True for real tokens, as in the public API.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        attn_dropout_p: float = 0.0,
        resid_dropout_p: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryPositionalEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        q, k = self.rotary(q, k)
        return self._attend(q, k, v, key_padding_mask, causal)

    def forward_cached(
        self,
        query: torch.Tensor,
        new_kv: torch.Tensor,
        cache: KVCache,
        layer: int,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = True,
    ) -> torch.Tensor:
        """Attend from `query` to the cached keys/values plus those of `new_kv`.

        Keys are stored already rotated (by `positions`; None means no rotation, the public
        rule for a length-1 query). `key_padding_mask` covers every key, cached and new.
        """
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(new_kv))
        v = self._heads(self.v_proj(new_kv))
        if positions is not None:
            q, k = self.rotary.rotate(q, positions), self.rotary.rotate(k, positions)
        k, v = cache.update(layer, k, v)
        return self._attend(q, k, v, key_padding_mask, causal)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        b, _, q_len, _ = q.shape
        k_len = k.shape[-2]
        attn_mask, is_causal, valid_rows = build_attention_mask(
            q_len, k_len, causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout_p if self.training else 0.0,
            is_causal=is_causal,
        )
        if valid_rows is not None:
            out = out.masked_fill(~valid_rows, 0.0)
        out = out.transpose(1, 2).reshape(b, q_len, self.d_model)
        return self.resid_dropout(self.out_proj(out))


class TransformerBlock(nn.Module):
    """Pre-norm block: causal self-attention then SwiGLU, each with a residual.

    With `activation_checkpointing` set (see `set_activation_checkpointing`) the block is
    recomputed in the backward pass instead of storing its activations; the non-reentrant
    checkpoint restores the RNG state, so dropout masks are identical in the recomputation.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ff_dim: int = 1024,
        ffn_dropout_p: float = 0.0,
        attn_dropout_p: float = 0.0,
        resid_dropout_p: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = MultiHeadAttentionWithRoPE(
            d_model, n_heads, attn_dropout_p, resid_dropout_p
        )
        self.norm2 = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ff_dim, ffn_dropout_p)
        self.activation_checkpointing = False

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, key_padding_mask, use_reentrant=False)
        return self._forward(x, key_padding_mask)

    def _forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.ffn(self.norm2(x))

    def forward_cached(
        self,
        x: torch.Tensor,
        cache: KVCache,
        layer: int,
        positions: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The same block for new tokens `x` only, reading earlier tokens from `cache`."""
        h = self.norm1(x)
        attn = self.self_attn.forward_cached(
            h, h, cache, layer, positions=positions, key_padding_mask=key_padding_mask
        )
        x = x + attn
        return x + self.ffn(self.norm2(x))


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> int:
    """Switch checkpointing on every TransformerBlock of `model`; returns how many blocks."""
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    for block in blocks:
        block.activation_checkpointing = bool(enabled)
    return len(blocks)


def init_weights(model: nn.Module, embed_std: float) -> None:
    """Initialise for training from scratch, following the public Kronos scheme.

    Linear weights xavier-normal with zero biases, trainable embeddings normal(0, embed_std)
    (the public code uses d_model ** -0.5), norms ones. Frozen tables (the fixed sinusoidal
    time embedding) are left alone; the public code overwrote them by accident.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding) and module.weight.requires_grad:
            nn.init.normal_(module.weight, mean=0.0, std=embed_std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


def default_embed_std(d_model: int) -> float:
    return 1.0 / math.sqrt(d_model)
