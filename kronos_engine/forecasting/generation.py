"""Autoregressive forecasting over token ids: KV-cached, batched over unequal histories.

The algorithm is the public one (SPEC "Autoregressive forecasting"): encode the clipped
context, then for each future step run `decode_s1` on the last `max_context` tokens, sample s1,
run `decode_s2` with it, sample s2, append; finally decode the last `max_context` ids (a
forecast longer than `max_context`: block by block from its end, `decode_future`).

Two ways to run the predictor, with the same result:
- cached (default): while every window still starts at the first token, each token's keys and
  values never change, so the context is run once (prefill) and each step feeds one token.
  Once the longest history slides past `max_context`, every window start moves and every
  hidden state changes, so those steps recompute the window (the public step itself).
- `use_cache=False`: every step recomputes its window, the public loop as written (the
  reference and the benchmark baseline); padded batches do it through a fresh cache so the
  pads stay masked.

Histories of different lengths are left-padded; the key-padding mask hides the pads and each
row's rotary positions count from its own first token, so a row's numbers are those it gets
alone. The tokenizer encodes and decodes each distinct length separately for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from kronos_engine.forecasting.options import SamplingOptions
from kronos_engine.forecasting.sampling import sample_from_logits, sample_keyed, substream
from kronos_engine.models.kv_cache import KVCache
from kronos_engine.models.predictor import Kronos
from kronos_engine.models.tokenizer import KronosTokenizer

Draw = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout, public cross-attention behaviour), then restore."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def generate(
    tokenizer: KronosTokenizer,
    model: Kronos,
    contexts: Sequence[torch.Tensor],
    stamps: Sequence[torch.Tensor],
    pred_len: int,
    max_context: int,
    clip: float = 5.0,
    T: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.99,
    sample_count: int = 1,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    precision: str = "fp32",
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Forecast every normalised history `contexts[i]` `(C_i, d_in)` `pred_len` steps ahead.

    `stamps[i]` `(C_i + pred_len, 5)` are the calendar features of history and future.
    Returns every sample path, still normalised: `(len(contexts), sample_count, pred_len, d_in)`.
    `precision="bf16"` runs the predictor under bf16 autocast (the tokenizer stays fp32).
    The keyword face of `generate_paths`.
    """
    options = SamplingOptions(T=T, top_k=top_k, top_p=top_p, sample_count=sample_count)
    return generate_paths(
        tokenizer, model, contexts, stamps, pred_len, options, max_context=max_context,
        clip=clip, generator=generator, use_cache=use_cache, precision=precision,
        on_step=on_step,
    )  # fmt: skip


@torch.no_grad()
def generate_paths(
    tokenizer: KronosTokenizer,
    model: Kronos,
    contexts: Sequence[torch.Tensor],
    stamps: Sequence[torch.Tensor],
    pred_len: int,
    options: SamplingOptions,
    *,
    max_context: int,
    clip: float = 5.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    precision: str = "fp32",
    on_step: Callable[[], None] | None = None,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """`generate` with the sampling as one value (its `seed` is not read: pass `generator`,
    or `keys`: one int64 key per context (`sampling.series_key`), from which each sample path
    draws its own tokens, whatever else is in the batch; `generator` is then not read)."""
    _check_batch(contexts, stamps, pred_len, max_context)
    lengths = [int(c.shape[0]) for c in contexts]
    sample_count = options.sample_count
    with eval_mode(tokenizer, model):
        s1, s2 = generate_ids(
            tokenizer, model, contexts, stamps, pred_len, options, max_context=max_context,
            clip=clip, generator=generator, use_cache=use_cache, precision=precision,
            on_step=on_step, keys=keys,
        )  # fmt: skip
        rows = [n for n in lengths for _ in range(sample_count)]
        z = decode_future(tokenizer, s1, s2, rows, pred_len, max_context)
    return z.reshape(len(contexts), sample_count, pred_len, z.shape[-1])


def generate_ids(
    tokenizer: KronosTokenizer,
    model: Kronos,
    contexts: Sequence[torch.Tensor],
    stamps: Sequence[torch.Tensor],
    pred_len: int,
    options: SamplingOptions,
    *,
    max_context: int,
    clip: float,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    precision: str = "fp32",
    on_step: Callable[[], None] | None = None,
    keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the histories and sample `pred_len` tokens after each (models in eval mode):
    left-padded `(N * sample_count, C_max + pred_len)` s1 and s2 ids."""
    sample_count = options.sample_count
    if keys is not None and keys.shape != (len(contexts),):
        raise ValueError(f"keys: expected one per context ({len(contexts)}), got {keys.shape}")
    draw = _drawer(options, generator, keys)
    s1, s2 = encode_left_padded(tokenizer, contexts, pred_len, sample_count, clip)
    stamp = _left_pad([s.to(s1.device) for s in stamps], s1.shape[1]).long()
    stamp = stamp.repeat_interleave(sample_count, dim=0)
    context_end = s1.shape[1] - pred_len
    pads = torch.tensor([context_end - c.shape[0] for c in contexts], device=s1.device)
    pads = pads.repeat_interleave(sample_count)
    with _autocast(s1.device, precision):
        sample_tokens(model, s1, s2, stamp, pads, pred_len, max_context, draw, use_cache, on_step)
    return s1, s2


def sample_tokens(
    model: Kronos,
    s1: torch.Tensor,
    s2: torch.Tensor,
    stamp: torch.Tensor,
    pads: torch.Tensor,
    pred_len: int,
    max_context: int,
    draw: Draw,
    use_cache: bool = True,
    on_step: Callable[[], None] | None = None,
) -> None:
    """Fill the last `pred_len` columns of the left-padded id buffers `s1`, `s2` in place.

    `pads[r]` is the number of padding columns of row r; all rows end at the same column.
    """
    total = s1.shape[1]
    cols = torch.arange(total, device=s1.device)
    valid = cols[None, :] >= pads[:, None]
    padded = bool((pads > 0).any())
    cache: KVCache | None = None
    for end in range(total - pred_len, total):
        start = max(0, end - max_context)
        if padded or (use_cache and start == 0):
            if cache is None or start > 0 or not use_cache:
                cache, first = KVCache(min(max_context, total) if use_cache else end - start), start
            else:
                first = end - 1  # one new token: the one sampled in the previous step
            positions = (cols[None, first:end] - pads.clamp(min=start)[:, None]).clamp(min=0)
            mask = valid[:, start:end] if padded else None
            logits, hidden = model.decode_s1(
                s1[:, first:end], s2[:, first:end], stamp[:, first:end], mask,
                cache=cache, positions=positions,
            )  # fmt: skip
            next_s1 = draw(logits[:, -1])
            next_s2 = draw(model.decode_s2(hidden, next_s1, mask, cache=cache)[:, -1])
            cache.advance(end - first)
        else:  # the public step: the whole window, as the public loop computes it
            window = slice(start, end)
            logits, hidden = model.decode_s1(s1[:, window], s2[:, window], stamp[:, window])
            next_s1 = draw(logits[:, -1])
            next_s2 = draw(model.decode_s2(hidden, next_s1, causal=False)[:, -1])
        s1[:, end], s2[:, end] = next_s1[:, 0], next_s2[:, 0]
        if on_step is not None:
            on_step()


def encode_left_padded(
    tokenizer: KronosTokenizer,
    contexts: Sequence[torch.Tensor],
    pred_len: int,
    sample_count: int,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of each clipped history, right-aligned in `(N*S, C_max + pred_len)` buffers
    (rows repeated `sample_count` times; padding and future columns hold 0)."""
    device = next(tokenizer.parameters()).device
    lengths = [int(c.shape[0]) for c in contexts]
    width = max(lengths) + pred_len
    rows = len(contexts) * sample_count
    s1 = torch.zeros(rows, width, dtype=torch.long, device=device)
    s2 = torch.zeros_like(s1)
    for n in sorted(set(lengths)):
        members = [i for i, m in enumerate(lengths) if m == n]
        x = torch.stack([contexts[i] for i in members]).to(device=device, dtype=torch.float32)
        ids = tokenizer.encode(torch.clamp(x, -clip, clip), half=True)
        target = _rows(members, sample_count, device)
        left = width - pred_len - n
        for buf, part in zip((s1, s2), ids):
            buf[target, left : width - pred_len] = part.repeat_interleave(sample_count, dim=0)
    return s1, s2


def decode_future(
    tokenizer: KronosTokenizer,
    s1: torch.Tensor,
    s2: torch.Tensor,
    lengths: Sequence[int],
    pred_len: int,
    max_context: int,
) -> torch.Tensor:
    """The `pred_len` generated positions of each left-padded row (`lengths[r]` context ids,
    then `pred_len` generated), decoded: `(rows, pred_len, d_in)`.

    The public decode reads the last `max_context` ids and keeps the last `pred_len` rows.
    A forecast longer than `max_context` is decoded the same way block by block from its end:
    each block of (up to) `max_context` rows from the `max_context` ids that end with it (what
    the public decode reads had the forecast stopped there), never from ids the tokenizer's
    window cannot hold. Up to `max_context` rows this is exactly the public decode.
    """
    blocks = []
    for back in range(0, pred_len, max_context):  # ids after the block's end
        keep = min(max_context, pred_len - back)
        windows = [min(n + pred_len - back, max_context) for n in lengths]
        end = s1.shape[1] - back
        blocks.append(decode_windows(tokenizer, s1[:, :end], s2[:, :end], windows, keep))
    return torch.cat(blocks[::-1], dim=1)


def decode_windows(
    tokenizer: KronosTokenizer,
    s1: torch.Tensor,
    s2: torch.Tensor,
    windows: Sequence[int],
    keep: int,
) -> torch.Tensor:
    """Decode each row's last `windows[r]` ids (its final model window) and keep the last
    `keep` positions: `(rows, keep, d_in)`. Rows of equal window decode together."""
    out: torch.Tensor | None = None
    for w in sorted(set(windows)):
        members = [r for r, m in enumerate(windows) if m == w]
        index = torch.tensor(members, device=s1.device)
        z = tokenizer.decode([s1[index, -w:], s2[index, -w:]], half=True)[:, -keep:]
        if out is None:
            out = z.new_empty(len(windows), keep, z.shape[-1])
        out[index] = z
    assert out is not None
    return out


def _rows(members: list[int], sample_count: int, device: torch.device) -> torch.Tensor:
    base = torch.tensor(members, device=device)[:, None] * sample_count
    return (base + torch.arange(sample_count, device=device)).reshape(-1)


def _left_pad(tensors: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = tensors[0].new_zeros(len(tensors), width, *tensors[0].shape[1:])
    for i, t in enumerate(tensors):
        out[i, width - t.shape[0] :] = t
    return out


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _check_batch(
    contexts: Sequence[torch.Tensor],
    stamps: Sequence[torch.Tensor],
    pred_len: int,
    max_context: int,
) -> None:
    if not contexts or len(contexts) != len(stamps):
        raise ValueError("need one stamp tensor per context, and at least one context")
    if max_context < 1 or pred_len < 1:  # sample_count >= 1: SamplingOptions checked it
        raise ValueError("max_context, pred_len and sample_count must be >= 1")
    for i, (x, stamp) in enumerate(zip(contexts, stamps)):
        if x.dim() != 2 or x.shape[0] < 1:
            raise ValueError(f"context {i}: expected a (length >= 1, features) tensor")
        if stamp.shape[0] != x.shape[0] + pred_len:
            raise ValueError(
                f"stamps {i}: {stamp.shape[0]} rows, expected context {x.shape[0]} + "
                f"pred_len {pred_len}"
            )


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
    use_cache: bool = True,
) -> torch.Tensor:
    """The public tensor-level forecast of the normalised context `x` `(B, C, d_in)`.

    Returns the tokenizer's reconstruction of the last `min(C + pred_len, max_context)` tokens
    (context and generated), averaged over `sample_count` samples, still normalised; the
    forecast is its last `pred_len` rows (the public `preds`). A `pred_len` beyond
    `max_context` returns exactly `pred_len` rows, decoded block by block (`decode_future`).
    """
    _check_inputs(x, x_stamp, y_stamp, max_context, pred_len)
    options = SamplingOptions(T=T, top_k=top_k, top_p=top_p, sample_count=sample_count)
    batch, context_len = x.shape[:2]
    window = min(context_len + pred_len, max_context)
    stamps = torch.cat([x_stamp, y_stamp], dim=1)
    with eval_mode(tokenizer, model):
        s1, s2 = generate_ids(
            tokenizer, model, list(x), list(stamps), pred_len, options, max_context=max_context,
            clip=clip, generator=generator, use_cache=use_cache,
        )  # fmt: skip
        if pred_len > window:
            z = decode_future(tokenizer, s1, s2, [context_len] * len(s1), pred_len, max_context)
        else:
            z = tokenizer.decode([s1[:, -window:], s2[:, -window:]], half=True)
    return z.reshape(batch, sample_count, *z.shape[1:]).mean(dim=1)


def _drawer(
    options: SamplingOptions, generator: torch.Generator | None, keys: torch.Tensor | None
) -> Draw:
    """Each call draws one token per row. With `keys`, row r (series r // S, sample path
    r % S) draws from its own stream, and the n-th call reads the n-th uniform of it."""
    T, top_k, top_p = options.T, options.top_k, options.top_p
    if keys is None:
        return lambda logits: sample_from_logits(logits, T, top_k, top_p, generator)
    count = options.sample_count
    paths = torch.arange(count, dtype=torch.long, device=keys.device).repeat(len(keys))
    rows = substream(keys.long().repeat_interleave(count), paths)
    calls = iter(range(1 << 62))
    return lambda logits: sample_keyed(logits, rows, next(calls), T, top_k, top_p)
