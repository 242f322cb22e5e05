"""Token sampling for forecasting: temperature, then top-k or nucleus (top-p), as public.

Two ways to draw: `sample_from_logits` (the public draw: `torch.multinomial` on one generator,
so a row's tokens depend on every row drawn before it), and `sample_keyed`, where each row's
uniform comes from its own key and a draw counter through a counter-based hash (SplitMix64 on
int64 tensors, on the logits' device), so a forecast's tokens depend only on its identity and
the seed: never on the batch it shares, its position in it, or the process that runs it.
`series_key` makes a key from an identity with blake2b (Python's `hash()` is salted per
process). The keyed draw is one inverse-CDF lookup per row: as fast as `multinomial`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # SplitMix64's increment, as a signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


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


def series_key(seed: int, identity: Iterable[object]) -> int:
    """A signed int64 key of `seed` and an identity such as (symbol, origin seconds): the
    blake2b digest of their text, the same in every process, run and machine."""
    text = "\x1f".join([str(int(seed)), *(str(part) for part in identity)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on an int64 tensor (wrapping arithmetic, logical shifts)."""
    x = (x ^ _shift(x, 30)) * _MIX1
    x = (x ^ _shift(x, 27)) * _MIX2
    return x ^ _shift(x, 31)


def substream(keys: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
    """The keys of the `index`-th stream under each key (a sample path, a draw)."""
    if isinstance(index, int):  # wrap in Python: a torch scalar must fit int64
        step = ((index + 1) * _GOLDEN) % (1 << 64)
        return mix64(keys + (step - (1 << 64) if step >= 1 << 63 else step))
    return mix64(keys + (index + 1) * _GOLDEN)


def keyed_uniform(keys: torch.Tensor, draw: int) -> torch.Tensor:
    """One float64 uniform in [0, 1) per key for draw number `draw` (53 bits of the hash)."""
    return _shift(substream(keys, draw), 11).double() * 2.0**-53


def sample_keyed(
    logits: torch.Tensor,
    keys: torch.Tensor,
    draw: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """`sample_from_logits` with row r's token drawn by inverse CDF from
    `keyed_uniform(keys, draw)[r]`: `(B, 1)` long ids. A token outside the top-k / nucleus is
    never drawn, so `top_k=1` is greedy."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = F.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    cdf = probs.double().cumsum(dim=-1)
    u = keyed_uniform(keys.to(logits.device), draw) * cdf[:, -1]
    token = torch.searchsorted(cdf, u[:, None], right=True)[:, 0]
    width = probs.shape[-1]
    last = width - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)  # the last drawable id
    return torch.minimum(token, last)[:, None]


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)
