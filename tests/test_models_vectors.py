"""The models reproduce the public implementation's test vectors (see VECTORS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from kronos_engine.forecasting import auto_regressive_inference
from kronos_engine.models import Kronos, KronosTokenizer

ATOL, RTOL = 1e-5, 1e-4


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    if expected.is_floating_point():
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=name)
    else:
        assert actual.dtype == expected.dtype, name
        assert torch.equal(actual, expected), name


def assert_grads(model: torch.nn.Module, vectors: dict[str, torch.Tensor]) -> None:
    grad_keys = {k.removeprefix("grad.") for k in vectors if k.startswith("grad.")}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grad_keys == trainable
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert_close(param.grad, vectors[f"grad.{name}"], f"grad.{name}")


@pytest.fixture(scope="module")
def tok_vectors(reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(reference_dir / "vectors_tokenizer_tiny.safetensors")


@pytest.fixture(scope="module")
def pred_vectors(reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(reference_dir / "vectors_predictor_tiny.safetensors")


@pytest.fixture()
def tokenizer(reference_dir: Path) -> KronosTokenizer:
    return KronosTokenizer.from_pretrained(reference_dir / "tokenizer_tiny")


@pytest.fixture()
def predictor(reference_dir: Path) -> Kronos:
    return Kronos.from_pretrained(reference_dir / "predictor_tiny")


def test_tokenizer_training_forward_losses_and_grads(tokenizer, tok_vectors):
    x = tok_vectors["x"]
    tokenizer.train()
    (z_pre, z), bsq_loss, quantized, ids = tokenizer(x)
    assert_close(z_pre, tok_vectors["forward.z_pre"], "z_pre")
    assert_close(z, tok_vectors["forward.z"], "z")
    assert_close(bsq_loss, tok_vectors["forward.bsq_loss"], "bsq_loss")
    assert_close(quantized, tok_vectors["forward.quantized"], "quantized")
    assert_close(ids, tok_vectors["forward.indices"], "indices")

    recon_pre, recon_all = F.mse_loss(z_pre, x), F.mse_loss(z, x)
    loss = (recon_pre + recon_all + bsq_loss) / 2
    assert_close(recon_pre, tok_vectors["train.recon_loss_pre"], "recon_loss_pre")
    assert_close(recon_all, tok_vectors["train.recon_loss_all"], "recon_loss_all")
    assert_close(loss, tok_vectors["train.loss"], "loss")
    loss.backward()
    assert_grads(tokenizer, tok_vectors)


def test_tokenizer_eval_encode_decode(tokenizer, tok_vectors):
    x = tok_vectors["x"]
    assert not tokenizer.training  # from_pretrained returns eval mode
    with torch.no_grad():
        s1, s2 = tokenizer.encode(x, half=True)
        full = tokenizer.encode(x, half=False)
        assert_close(s1, tok_vectors["encode_half.s1"], "encode_half.s1")
        assert_close(s2, tok_vectors["encode_half.s2"], "encode_half.s2")
        assert_close(full, tok_vectors["encode_full"], "encode_full")
        assert_close(tokenizer.decode([s1, s2], half=True), tok_vectors["decode_half"], "dh")
        assert_close(tokenizer.decode(full), tok_vectors["decode_full"], "decode_full")
        (_, z), _, _, _ = tokenizer(x)
        assert_close(F.mse_loss(z, x), tok_vectors["eval.val_mse"], "val_mse")


def test_predictor_training_forward_loss_and_grads(predictor, pred_vectors):
    v = pred_vectors
    predictor.train()
    s1_logits, s2_logits = predictor(
        v["s1_ids"], v["s2_ids"], v["stamp"], use_teacher_forcing=True, s1_targets=v["s1_targets"]
    )
    assert_close(s1_logits, v["train_tf.s1_logits"], "s1_logits")
    assert_close(s2_logits, v["train_tf.s2_logits"], "s2_logits")
    loss, s1_loss, s2_loss = predictor.head.compute_loss(
        s1_logits, s2_logits, v["s1_targets"], v["s2_targets"]
    )
    assert_close(loss, v["train_tf.loss"], "loss")
    assert_close(s1_loss, v["train_tf.s1_loss"], "s1_loss")
    assert_close(s2_loss, v["train_tf.s2_loss"], "s2_loss")
    loss.backward()
    assert_grads(predictor, v)


@pytest.mark.parametrize("prefix, use_stamp", [("eval_tf", True), ("eval_tf_nostamp", False)])
def test_predictor_eval_forward(predictor, pred_vectors, prefix, use_stamp):
    v = pred_vectors
    stamp = v["stamp"] if use_stamp else None
    with torch.no_grad():
        s1_logits, s2_logits = predictor(
            v["s1_ids"], v["s2_ids"], stamp, use_teacher_forcing=True, s1_targets=v["s1_targets"]
        )
    assert_close(s1_logits, v[f"{prefix}.s1_logits"], f"{prefix}.s1_logits")
    assert_close(s2_logits, v[f"{prefix}.s2_logits"], f"{prefix}.s2_logits")


def test_predictor_decode_s1_and_s2(predictor, pred_vectors):
    v = pred_vectors
    with torch.no_grad():
        s1_logits, context = predictor.decode_s1(v["s1_ids"], v["s2_ids"], v["stamp"])
        s2_logits = predictor.decode_s2(context, v["s1_targets"])
    assert_close(s1_logits, v["decode_s1.s1_logits"], "decode_s1.s1_logits")
    assert_close(context, v["decode_s1.context"], "decode_s1.context")
    assert_close(s2_logits, v["decode_s2.s2_logits"], "decode_s2.s2_logits")


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv_cache", "recompute"])
@pytest.mark.parametrize("context, max_context", [(12, 32), (20, 16)])
def test_greedy_forecast_matches_reference(
    reference_dir, tokenizer, predictor, context, max_context, use_cache
):
    v = load_file(reference_dir / f"vectors_inference_ctx{context}_max{max_context}.safetensors")
    preds = auto_regressive_inference(
        tokenizer,
        predictor,
        v["x"],
        v["x_stamp"],
        v["y_stamp"],
        max_context=max_context,
        pred_len=6,
        clip=5.0,
        T=1.0,
        top_k=1,
        top_p=1.0,
        sample_count=1,
        use_cache=use_cache,
    )
    assert preds.shape == (2, min(context + 6, max_context), 6)
    assert_close(preds, v["preds"], "preds")
