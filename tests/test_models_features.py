"""Behaviour beyond the public code: unequal bits, padding masks, explicit causality,
activation checkpointing, sampling and the forecasting loop."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import kronos_engine.models.layers as layers
from kronos_engine.forecasting import auto_regressive_inference, filter_logits, sample_from_logits
from kronos_engine.models import Kronos, build_predictor, build_tokenizer
from kronos_engine.models.layers import MultiHeadAttentionWithRoPE, build_attention_mask

B, L = 3, 10


def random_tokens(seed: int, bits: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randint(0, 2**bits, (B, L), generator=g)
    s2 = torch.randint(0, 2**bits, (B, L), generator=g)
    stamp = torch.stack(
        [torch.randint(0, n, (B, L), generator=g) for n in (60, 24, 7, 32, 13)], dim=-1
    ).float()
    return s1, s2, stamp


@pytest.fixture()
def predictor() -> Kronos:
    torch.manual_seed(0)
    return build_predictor("tiny").eval()


# --- tokenizer with unequal halves ---------------------------------------------------------


def test_decode_splits_halves_at_s1_bits():
    torch.manual_seed(0)
    tok = build_tokenizer("tiny", s1_bits=3, s2_bits=5).eval()
    x = torch.randn(2, 9, 6)
    with torch.no_grad():
        s1, s2 = tok.encode(x, half=True)
        full = tok.encode(x)
        (_, z), _, quantized, _ = tok(x)
        assert int(s1.max()) < 2**3 and int(s2.max()) < 2**5
        assert torch.equal(full, s1 + (s2 << 3))
        assert torch.equal(tok.indices_to_bits([s1, s2], half=True), quantized)
        assert torch.equal(tok.indices_to_bits(full), quantized)
        torch.testing.assert_close(tok.decode([s1, s2], half=True), z)
        torch.testing.assert_close(tok.decode(full), z)


# --- masks -----------------------------------------------------------------------------------


def padding_mask() -> torch.Tensor:
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :3] = False  # left padding: first query rows see no real key under the causal mask
    mask[1, -4:] = False  # right padding
    return mask


def perturb_padded(tensor: torch.Tensor, mask: torch.Tensor, high: int) -> torch.Tensor:
    changed = tensor.clone()
    changed[~mask] = (changed[~mask] + 1 + torch.arange(int((~mask).sum()))) % high
    return changed


@pytest.mark.parametrize("causal_cross_attn", [None, True, False])
def test_padded_positions_never_influence_real_positions(predictor, causal_cross_attn):
    s1, s2, stamp = random_tokens(1)
    mask = padding_mask()
    targets = torch.roll(s1, -1, dims=1)
    outputs = []
    for s1_in, s2_in, tgt in [
        (s1, s2, targets),
        (
            perturb_padded(s1, mask, 16),
            perturb_padded(s2, mask, 16),
            perturb_padded(targets, mask, 16),
        ),
    ]:
        with torch.no_grad():
            outputs.append(
                predictor(
                    s1_in,
                    s2_in,
                    stamp,
                    padding_mask=mask,
                    use_teacher_forcing=True,
                    s1_targets=tgt,
                    causal_cross_attn=causal_cross_attn,
                )
            )
    (a1, a2), (b1, b2) = outputs
    assert not torch.equal(s1[~mask], perturb_padded(s1, mask, 16)[~mask])
    for logits in (a1, a2, b1, b2):
        assert torch.isfinite(logits).all()  # fully masked query rows must not produce NaN
    torch.testing.assert_close(a1[mask], b1[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(a2[mask], b2[mask], rtol=0, atol=1e-6)


def test_without_mask_padding_would_leak(predictor):
    """Control for the test above: the same perturbation changes outputs when unmasked."""
    s1, s2, stamp = random_tokens(1)
    mask = padding_mask()
    with torch.no_grad():
        a = predictor(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1)[1]
        s1b = perturb_padded(s1, mask, 16)
        b = predictor(s1b, s2, stamp, use_teacher_forcing=True, s1_targets=s1b)[1]
    assert not torch.allclose(a[mask], b[mask])


def test_right_padding_equals_the_shorter_sequence(predictor):
    """Eval-mode (non-causal) cross-attention must ignore padded keys entirely."""
    s1, s2, stamp = random_tokens(2)
    real = 6
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, :real] = True
    with torch.no_grad():
        padded = predictor(s1, s2, stamp, mask, use_teacher_forcing=True, s1_targets=s1)
        short = predictor(
            s1[:, :real],
            s2[:, :real],
            stamp[:, :real],
            use_teacher_forcing=True,
            s1_targets=s1[:, :real],
        )
    for got, want in zip(padded, short):
        torch.testing.assert_close(got[:, :real], want, rtol=1e-5, atol=1e-6)


def test_fully_masked_rows_are_finite_and_zero():
    torch.manual_seed(0)
    attn = MultiHeadAttentionWithRoPE(16, 4).eval()
    x = torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False  # a sample with no real token at all
    out = attn(x, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], attn.out_proj.bias.expand(5, 16))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_attention_mask_combines_causal_and_padding():
    keep = torch.tensor([[False, True, True, True]])
    mask, is_causal, valid = build_attention_mask(
        4, 4, causal=True, key_padding_mask=keep, device=torch.device("cpu")
    )
    assert not is_causal
    expected = torch.tensor(
        [
            [True, True, True, True],  # no real key: opened up, reported invalid below
            [False, True, False, False],
            [False, True, True, False],
            [False, True, True, True],
        ]
    )
    assert torch.equal(mask[0, 0], expected)
    assert valid[0, 0, :, 0].tolist() == [False, True, True, True]
    assert build_attention_mask(
        4, 4, causal=True, key_padding_mask=None, device=torch.device("cpu")
    )[:2] == (None, True)
    # A length-1 causal query is aligned with the last key, so it sees the whole context.
    # No mask at all (the fast SDPA path) is exactly that.
    assert build_attention_mask(
        1, 4, causal=True, key_padding_mask=None, device=torch.device("cpu")
    ) == (None, False, None)


def test_compute_loss_ignores_padding(predictor):
    torch.manual_seed(3)
    s1_logits, s2_logits = torch.randn(B, L, 16), torch.randn(B, L, 16)
    s1_t, s2_t = torch.randint(0, 16, (B, L)), torch.randint(0, 16, (B, L))
    mask = padding_mask()
    loss, ce1, ce2 = predictor.head.compute_loss(s1_logits, s2_logits, s1_t, s2_t, mask)
    want1 = torch.nn.functional.cross_entropy(s1_logits[mask], s1_t[mask])
    want2 = torch.nn.functional.cross_entropy(s2_logits[mask], s2_t[mask])
    torch.testing.assert_close(ce1, want1)
    torch.testing.assert_close(ce2, want2)
    torch.testing.assert_close(loss, (want1 + want2) / 2)


# --- explicit cross-attention causality --------------------------------------------------------


def test_causal_cross_attention_in_eval_never_sees_the_future(predictor):
    s1, s2, stamp = random_tokens(4)
    targets = torch.roll(s1, -1, dims=1)
    t = 5
    s1b, s2b, tb = s1.clone(), s2.clone(), targets.clone()
    s1b[:, t + 1 :] = (s1b[:, t + 1 :] + 3) % 16
    s2b[:, t + 1 :] = (s2b[:, t + 1 :] + 5) % 16
    tb[:, t + 1 :] = (tb[:, t + 1 :] + 7) % 16
    assert not predictor.training

    def s2_logits(a, b, tgt, causal):
        with torch.no_grad():
            return predictor(
                a, b, stamp, use_teacher_forcing=True, s1_targets=tgt, causal_cross_attn=causal
            )[1]

    causal_a, causal_b = s2_logits(s1, s2, targets, True), s2_logits(s1b, s2b, tb, True)
    torch.testing.assert_close(causal_a[:, : t + 1], causal_b[:, : t + 1], rtol=0, atol=1e-6)
    # The public eval behaviour (None -> not causal) leaks the future into earlier positions.
    public_a, public_b = s2_logits(s1, s2, targets, None), s2_logits(s1b, s2b, tb, None)
    assert not torch.allclose(public_a[:, : t + 1], public_b[:, : t + 1])
    with torch.no_grad():
        _, context = predictor.decode_s1(s1, s2, stamp)
        direct = predictor.decode_s2(context, targets, causal=True)
    torch.testing.assert_close(direct, causal_a)


def test_causal_flag_reproduces_the_other_mode(reference_dir):
    """Eval + causal=True equals the public training forward; train + causal=False equals eval."""
    model = Kronos.from_pretrained(reference_dir / "predictor_tiny")  # all dropouts are 0
    v = load_file(reference_dir / "vectors_predictor_tiny.safetensors")
    args = (v["s1_ids"], v["s2_ids"], v["stamp"])
    kwargs = {"use_teacher_forcing": True, "s1_targets": v["s1_targets"]}
    with torch.no_grad():
        eval_causal = model(*args, causal_cross_attn=True, **kwargs)[1]
        model.train()
        train_open = model(*args, causal_cross_attn=False, **kwargs)[1]
    torch.testing.assert_close(eval_causal, v["train_tf.s2_logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(train_open, v["eval_tf.s2_logits"], atol=1e-5, rtol=1e-4)


def test_forward_samples_s1_without_teacher_forcing(predictor):
    s1, s2, stamp = random_tokens(5)
    torch.manual_seed(0)
    a = predictor(s1, s2, stamp)
    torch.manual_seed(0)
    b = predictor(s1, s2, stamp)
    assert a[1].shape == (B, L, 16)
    torch.testing.assert_close(a[1], b[1])
    with pytest.raises(ValueError, match="s1_targets"):
        predictor(s1, s2, stamp, use_teacher_forcing=True)


# --- activation checkpointing ----------------------------------------------------------------


def grads_of(model: torch.nn.Module, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss_fn(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def count_checkpoint_calls(monkeypatch) -> list[int]:
    calls = []
    original = layers.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        assert kwargs.get("use_reentrant") is False
        return original(*args, **kwargs)

    monkeypatch.setattr(layers, "checkpoint", counting)
    return calls


def predictor_loss(model: Kronos) -> torch.Tensor:
    s1, s2, stamp = random_tokens(6)
    targets = torch.roll(s1, -1, dims=1)
    s1_logits, s2_logits = model(s1, s2, stamp, padding_mask=padding_mask())
    return model.head.compute_loss(s1_logits, s2_logits, targets, targets, padding_mask())[0]


def tokenizer_loss(model) -> torch.Tensor:
    x = torch.randn(2, 12, 6, generator=torch.Generator().manual_seed(7))
    (z_pre, z), bsq_loss, _, _ = model(x)
    return torch.nn.functional.mse_loss(z_pre, x) + torch.nn.functional.mse_loss(z, x) + bsq_loss


@pytest.mark.parametrize("kind", ["predictor", "tokenizer"])
def test_activation_checkpointing_gives_identical_gradients(monkeypatch, kind):
    torch.manual_seed(0)
    dropouts = {"ffn_dropout_p": 0.2, "attn_dropout_p": 0.2, "resid_dropout_p": 0.2}
    if kind == "predictor":
        model, loss_fn, blocks = (
            build_predictor("tiny", token_dropout_p=0.2, **dropouts),
            predictor_loss,
            2,
        )
    else:
        model, loss_fn, blocks = build_tokenizer("tiny", **dropouts), tokenizer_loss, 6
    model.train()
    calls = count_checkpoint_calls(monkeypatch)
    plain = grads_of(model, loss_fn)
    assert calls == []
    model.set_activation_checkpointing(True)
    checkpointed = grads_of(model, loss_fn)
    assert len(calls) == blocks  # block calls; the tokenizer decoder runs twice
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        assert torch.equal(plain[name], checkpointed[name]), name
    # Dropout is active, so a different seed really changes the gradients (the test can fail).
    torch.manual_seed(999)
    model.zero_grad(set_to_none=True)
    loss_fn(model).backward()
    assert any(not torch.equal(p.grad, plain[n]) for n, p in model.named_parameters() if n in plain)


def test_checkpointing_is_skipped_in_eval_and_without_grad(monkeypatch, predictor):
    calls = count_checkpoint_calls(monkeypatch)
    predictor.set_activation_checkpointing(True)
    s1, s2, stamp = random_tokens(8)
    predictor(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1)
    predictor.train()
    with torch.no_grad():
        predictor(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1)
    assert calls == []
    predictor.set_activation_checkpointing(False)
    predictor(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1)
    assert calls == []


# --- sampling and forecasting ---------------------------------------------------------------


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True]]
    # Nucleus 0.7: 0.5 alone is not enough, 0.5 + 0.3 crosses it; the rest is dropped.
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[False, True, False, True]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.4))
    assert kept.tolist() == [[False, True, False, False]]
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)


def test_sample_from_logits_greedy_and_reproducible():
    logits = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    greedy = sample_from_logits(logits, temperature=0.7, top_k=1)
    assert greedy.shape == (5, 1) and torch.equal(greedy[:, 0], logits.argmax(-1))
    a = sample_from_logits(logits, 1.0, 0, 0.9, torch.Generator().manual_seed(1))
    b = sample_from_logits(logits, 1.0, 0, 0.9, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        sample_from_logits(logits, temperature=0.0)


def forecast_inputs(context: int, pred_len: int):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, context, 6, generator=g) * 3
    stamps = random_tokens(12)[2][:2]
    full = stamps.repeat(1, 4, 1)[:, : context + pred_len]
    return x, full[:, :context], full[:, context:]


def test_forecast_sampling_is_reproducible_and_restores_modes():
    torch.manual_seed(0)
    tok, pred = build_tokenizer("tiny").train(), build_predictor("tiny").train()
    x, x_stamp, y_stamp = forecast_inputs(12, 5)

    def run(seed: int, **kwargs):
        gen = torch.Generator().manual_seed(seed)
        return auto_regressive_inference(
            tok, pred, x, x_stamp, y_stamp, 14, 5, generator=gen, **kwargs
        )

    a, b, c = run(0, sample_count=4), run(0, sample_count=4), run(1, sample_count=4)
    assert a.shape == (2, 14, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert tok.training and pred.training and all(m.training for m in pred.modules())
    # Greedy decoding gives the same forecast for every sample, so averaging changes nothing.
    greedy_1 = run(0, sample_count=1, top_k=1)
    greedy_3 = run(5, sample_count=3, top_k=1)
    torch.testing.assert_close(greedy_1, greedy_3)


def test_forecast_validates_shapes():
    tok, pred = build_tokenizer("tiny"), build_predictor("tiny")
    x, x_stamp, y_stamp = forecast_inputs(8, 3)
    with pytest.raises(ValueError, match="pred_len=4"):
        auto_regressive_inference(tok, pred, x, x_stamp, y_stamp, 16, 4)
    with pytest.raises(ValueError, match="x_stamp"):
        auto_regressive_inference(tok, pred, x, x_stamp[:, :-1], y_stamp, 16, 3)


# --- reduced precision ----------------------------------------------------------------------


def test_bf16_weights_and_autocast_run():
    torch.manual_seed(0)
    tok = build_tokenizer("tiny").to(torch.bfloat16).train()
    x = torch.randn(2, 8, 6, dtype=torch.bfloat16)
    (z_pre, z), bsq_loss, quantized, _ = tok(x)
    assert z.dtype == quantized.dtype == torch.bfloat16
    assert bsq_loss.dtype == torch.float32 and torch.isfinite(bsq_loss)
    pred = build_predictor("tiny").train()
    s1, s2, stamp = random_tokens(9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s1_logits, s2_logits = pred(
            s1, s2, stamp, padding_mask(), use_teacher_forcing=True, s1_targets=s1
        )
        loss = pred.head.compute_loss(s1_logits, s2_logits, s1, s2, padding_mask())[0]
    loss.backward()
    assert torch.isfinite(loss) and all(
        torch.isfinite(p.grad).all() for p in pred.parameters() if p.grad is not None
    )


def test_bsq_codebook_entropy_is_per_bit_as_in_the_public_code():
    """The public loss averages per-bit probabilities (group_size has no effect); the
    reference `forward.bsq_loss` only matches this form, not the grouped softmax of SPEC.md."""
    from kronos_engine.models.tokenizer import BinarySphericalQuantizer

    z = torch.nn.functional.normalize(
        torch.randn(4, 7, 8, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    q2 = BinarySphericalQuantizer(8, 0.05, 1.0, 1.1, 0.05, group_size=2)
    q4 = BinarySphericalQuantizer(8, 0.05, 1.0, 1.1, 0.05, group_size=4)
    assert torch.equal(q2(z)[1], q4(z)[1])
    p = torch.sigmoid(-4 * z / 8**0.5).reshape(-1, 8).mean(0)
    expected = -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8)).sum()
    torch.testing.assert_close(q4.soft_entropy_loss(z)[1], expected)
