"""Both strategies against the public implementation's numbers, and the validation reduction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from engine_helpers import tiny_cfg
from kronos_engine.strategies import PredictorNextTokenStrategy, TokenizerReconStrategy
from safetensors.torch import load_file

from kronos_engine import TrainContextBuilder
from kronos_engine.models import Kronos, KronosTokenizer
from kronos_engine.training.validation import evaluate

TOL = dict(atol=1e-5, rtol=1e-4)


def test_tokenizer_strategy_reproduces_reference_loss_and_grads(reference_dir, tmp_path):
    vec = load_file(str(reference_dir / "vectors_tokenizer_tiny.safetensors"))
    model = KronosTokenizer.from_pretrained(reference_dir / "tokenizer_tiny")
    strategy = TokenizerReconStrategy(tiny_cfg(tmp_path))
    model.train()
    out = strategy.training_step(model, (vec["x"], None), SimpleNamespace(unwrapped_model=model))
    out.loss.backward()
    torch.testing.assert_close(out.loss, vec["train.loss"], **TOL)
    torch.testing.assert_close(out.parts["recon_loss_pre"], vec["train.recon_loss_pre"], **TOL)
    torch.testing.assert_close(out.parts["recon_loss_all"], vec["train.recon_loss_all"], **TOL)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, vec[f"grad.{name}"], **TOL, msg=name)
    model.eval()
    with torch.no_grad():
        val = strategy.validation_step(model, (vec["x"], None), None)
    torch.testing.assert_close(val.metric_sum / val.count, vec["eval.val_mse"], **TOL)


class FixedTokens(PredictorNextTokenStrategy):
    """The predictor strategy fed the reference token ids instead of a tokenizer's output."""

    def __init__(self, cfg, s1, s2):
        super().__init__(cfg)
        self.ids = (s1, s2)

    def encode(self, x):
        return self.ids


def _reference_batch(vec):
    s1 = torch.cat([vec["s1_ids"], vec["s1_targets"][:, -1:]], dim=1)
    s2 = torch.cat([vec["s2_ids"], vec["s2_targets"][:, -1:]], dim=1)
    stamp = torch.cat([vec["stamp"], vec["stamp"][:, -1:]], dim=1)
    x = torch.zeros(s1.shape[0], s1.shape[1], 6)
    return s1, s2, (x, stamp)


def test_predictor_strategy_reproduces_reference_loss_and_grads(reference_dir, tmp_path):
    vec = load_file(str(reference_dir / "vectors_predictor_tiny.safetensors"))
    model = Kronos.from_pretrained(reference_dir / "predictor_tiny")
    s1, s2, batch = _reference_batch(vec)
    cfg = tiny_cfg(tmp_path, train_type="predictor", teacher_forcing=True)
    strategy = FixedTokens(cfg, s1, s2)
    model.train()
    out = strategy.training_step(model, batch, SimpleNamespace(unwrapped_model=model))
    out.loss.backward()
    torch.testing.assert_close(out.loss, vec["train_tf.loss"], **TOL)
    torch.testing.assert_close(out.parts["s1_loss"], vec["train_tf.s1_loss"], **TOL)
    torch.testing.assert_close(out.parts["s2_loss"], vec["train_tf.s2_loss"], **TOL)
    for name, param in model.named_parameters():
        if param.grad is not None or f"grad.{name}" in vec:
            torch.testing.assert_close(param.grad, vec[f"grad.{name}"], **TOL, msg=name)
    # Validation in eval mode is causal and teacher-forced: identical to the training-mode
    # teacher-forced loss (dropout is 0), unlike the public eval forward that sees the future.
    model.eval()
    with torch.no_grad():
        val = strategy.validation_step(model, batch, SimpleNamespace(unwrapped_model=model))
    torch.testing.assert_close(val.metric_sum / val.count, vec["train_tf.loss"], **TOL)
    parts = {k: v / val.count for k, v in val.part_sums.items()}
    torch.testing.assert_close(parts["val_s1_loss"], vec["train_tf.s1_loss"], **TOL)
    torch.testing.assert_close(parts["val_s2_loss"], vec["train_tf.s2_loss"], **TOL)


def test_predictor_validation_is_deterministic_and_leak_free(tmp_path):
    from engine_helpers import save_random_tokenizer

    tok = save_random_tokenizer(tmp_path / "tok")
    cfg = tiny_cfg(tmp_path, train_type="predictor", tokenizer_path=str(tok))
    ctx = TrainContextBuilder(cfg).build()
    first, second = evaluate(ctx), evaluate(ctx)
    assert first == second
    x, stamp = next(iter(ctx.val_loader))
    s1, s2 = ctx.strategy.encode(x)
    model = ctx.model.eval()
    with torch.no_grad():
        a = model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1, causal_cross_attn=True)
        s1b = s1.clone()
        s1b[:, -1] = (s1b[:, -1] + 1) % 16
        b = model(s1, s2, stamp, use_teacher_forcing=True, s1_targets=s1b, causal_cross_attn=True)
    torch.testing.assert_close(a[1][:, :-1], b[1][:, :-1])  # future targets never leak back


def test_validation_metric_is_the_exact_per_sample_mean(tmp_path):
    cfg = tiny_cfg(tmp_path, val_samples=None, batch_size=7)
    ctx = TrainContextBuilder(cfg).build()
    metrics = evaluate(ctx)
    dataset = ctx.val_loader.dataset
    model = ctx.model.eval()
    per_sample = []
    with torch.no_grad():
        for i in range(len(dataset)):
            x, _ = dataset[i]
            (_, z), _, _, _ = model(x[None])
            per_sample.append(((z - x[None]) ** 2).mean().item())
    assert metrics["val_samples"] == len(dataset) and len(dataset) % 7 != 0
    assert metrics["val_recon_mse"] == pytest.approx(sum(per_sample) / len(per_sample), rel=1e-6)
