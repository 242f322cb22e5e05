"""Parameter-efficient and partial fine-tuning: LoRA through peft (the real library) and freeze."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from engine_helpers import run, save_random_tokenizer, tiny_cfg
from safetensors.torch import load_file
from toolbox_helpers import assert_resume_is_bit_exact, state

from kronos_engine import KronosPredictor, TrainCallback
from kronos_engine.errors import ConfigError, ResumeError
from kronos_engine.models import Kronos, KronosTokenizer, build_predictor
from kronos_engine.training.finetune import DEFAULT_LORA_TARGETS

peft = pytest.importorskip("peft")  # in the `dev` extra; skipped only outside it


class BaseAtStart(TrainCallback):
    """The model's weights when training starts, with peft's prefixes removed."""

    def on_train_begin(self, ctx) -> None:
        self.weights = {
            k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in state(ctx.unwrapped_model).items()
            if "lora_" not in k
        }


@pytest.fixture
def tok(tmp_path):
    return save_random_tokenizer(tmp_path / "tok")


def lora_cfg(tmp_path, tok, **overrides):
    values = dict(train_type="predictor", tokenizer_path=str(tok), finetune_method="lora")
    values.update(lr=1e-2, lora_r=4, lora_alpha=8.0)
    values.update(overrides)
    return tiny_cfg(tmp_path, **values)


def test_lora_trains_only_the_adapters_and_checkpoints_hold_only_them(tmp_path, tok):
    start = BaseAtStart()
    ctx = run(lora_cfg(tmp_path, tok, max_steps=3, ckpt_interval=3), start)
    model = ctx.unwrapped_model
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # Every default target of every block got an A (r x in) and B (out x r) matrix.
    linears = {
        n: m
        for n, m in build_predictor("tiny").named_modules()
        if n.rsplit(".", 1)[-1] in DEFAULT_LORA_TARGETS
    }
    expected = sum(4 * (m.in_features + m.out_features) for m in linears.values())
    assert sum(p.numel() for p in trainable.values()) == expected
    # The base weights did not move; the adapters did (B starts at zero).
    end = BaseAtStart()
    end.on_train_begin(ctx)
    assert end.weights.keys() == start.weights.keys() == state(build_predictor("tiny")).keys()
    assert all(torch.equal(end.weights[k], v) for k, v in start.weights.items())
    assert any(float(p.detach().abs().sum()) > 0 for n, p in trainable.items() if "lora_B" in n)
    ckpt = ctx.output_dir / "checkpoints" / "step_3"
    names = {p.name for p in ckpt.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= names
    assert "model.safetensors" not in names
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    assert len(saved) == len(trainable)
    optim = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert len(optim["state"]) == len(trainable)  # moments of the adapters only


def test_lora_best_is_a_merged_public_model_with_its_adapter_and_forecasts(tmp_path, tok):
    start = BaseAtStart()
    ctx = run(lora_cfg(tmp_path, tok, max_steps=4, lora_dropout=0.0), start)
    best = ctx.output_dir / "best"
    plain = Kronos.from_pretrained(best)  # the public layout, strict load: no peft keys
    assert not any("lora" in k for k in plain.state_dict())
    # The adapter alone, in peft's format, on the untouched base gives the same model.
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (best / "adapter").iterdir()
    }
    assert json.loads((best / "adapter" / "adapter_config.json").read_text())["r"] == 4
    base = build_predictor("tiny")
    base.load_state_dict(start.weights)
    with torch.no_grad():
        s1 = torch.randint(0, 16, (2, 12))
        stamp = torch.zeros(2, 12, 5)
        adapted = peft.PeftModel.from_pretrained(base, str(best / "adapter")).eval()
        expected = adapted(s1, s1, stamp, use_teacher_forcing=True, s1_targets=s1)
        got = plain.eval()(s1, s1, stamp, use_teacher_forcing=True, s1_targets=s1)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=1e-5)
        untouched = build_predictor("tiny")
        untouched.load_state_dict(start.weights)
        assert not torch.allclose(expected[0], untouched.eval()(s1, s1, stamp)[0])
    # The whole run forecasts through the public predictor class.
    predictor = KronosPredictor.from_run(ctx.cfg.exp_dir, device="cpu")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))
    df = pd.DataFrame({"timestamps": pd.date_range("2024-01-01", periods=40, freq="D")})
    df["open"], df["close"] = close, close * 1.001
    df["high"], df["low"] = close * 1.01, close * 0.99
    df["volume"] = rng.integers(1000, 5000, 40).astype(float)
    df["amount"] = df["volume"] * close
    forecast = predictor.predict(df, df["timestamps"], pred_len=5, top_k=1, verbose=False)
    assert forecast.shape == (5, 6) and np.isfinite(forecast.to_numpy()).all()


def test_lora_with_ema_resumes_bit_exact(tmp_path, tok):
    common = dict(train_type="predictor", tokenizer_path=str(tok), finetune_method="lora")
    common.update(lr=1e-2, lora_r=4, dropout=0.2, lora_dropout=0.1, ema=True, ema_decay=0.8)
    common.update(grad_accum_steps=2, batch_size=4, ckpt_interval=1, keep_last=20, val_interval=4)
    straight, resumed = assert_resume_is_bit_exact(tmp_path, crash_step=5, **common)
    a, b = state(straight.eval_model), state(resumed.eval_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    s = load_file(str(straight.output_dir / "best" / "model.safetensors"))
    r = load_file(str(resumed.output_dir / "best" / "model.safetensors"))
    assert s.keys() == r.keys() and all(torch.equal(s[k], r[k]) for k in s)


def test_lora_targets_default_to_both_models_projections_and_are_checked(tmp_path, tok):
    ctx = run(tiny_cfg(tmp_path / "t", finetune_method="lora", max_steps=1))  # the tokenizer
    names = [n for n, p in ctx.unwrapped_model.named_parameters() if p.requires_grad]
    assert any("encoder.0.self_attn.q_proj.lora_A" in n for n in names)
    assert any("decoder.0.ffn.w2.lora_B" in n for n in names)
    KronosTokenizer.from_pretrained(ctx.output_dir / "best")
    with pytest.raises(ConfigError, match="lora_targets: no module named 'qkv'"):
        run(lora_cfg(tmp_path / "x", tok, lora_targets=["qkv"]))


def test_lora_without_peft_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an environment without peft gives
    with pytest.raises(ConfigError) as info:
        run(tiny_cfg(tmp_path, finetune_method="lora"))
    assert str(info.value) == (
        "finetune_method: 'lora' needs the 'peft' package; install it with "
        "pip install 'kronos-engine[peft]'"
    )
    assert not (tmp_path / "exp").exists()  # stopped before any work


def test_freeze_keeps_the_patterns_frozen(tmp_path, tok):
    start = BaseAtStart()
    cfg = tiny_cfg(
        tmp_path,
        train_type="predictor",
        tokenizer_path=str(tok),
        finetune_method="freeze",
        max_steps=2,
        lr=1e-2,
    )
    ctx = run(cfg, start)
    before, after = start.weights, state(ctx.unwrapped_model)
    frozen = [k for k in before if k.startswith(("embedding.", "time_emb.", "transformer.0."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    later = [k for k in before if k.startswith("transformer.1.") and k.endswith("weight")]
    assert later and all(not torch.equal(before[k], after[k]) for k in later)
    assert len(ctx.optimizer.param_groups[0]["params"]) == sum(
        1 for p in ctx.unwrapped_model.parameters() if p.requires_grad
    )
    with pytest.raises(ConfigError, match="freeze_patterns: 'encoder.9.\\*' matches no parameter"):
        run(tiny_cfg(tmp_path / "bad", finetune_method="freeze", freeze_patterns=["encoder.9.*"]))
    with pytest.raises(ConfigError, match="freeze every parameter"):
        run(tiny_cfg(tmp_path / "all", finetune_method="freeze", freeze_patterns=["*"]))


def test_lora_resume_refuses_a_different_base_or_method(tmp_path, tok):
    first = run(lora_cfg(tmp_path, tok, max_steps=2))
    assert (first.output_dir / "checkpoints" / "step_2" / "base_model.json").is_file()
    other_base = lora_cfg(tmp_path, tok, max_steps=4, seed=8, resume=str(first.output_dir))
    with pytest.raises(ResumeError, match="frozen base model differs"):
        run(other_base)
    as_full = lora_cfg(tmp_path, tok, finetune_method="full", resume=str(first.output_dir))
    with pytest.raises(ResumeError, match="trained with 'lora', this run asks for 'full'"):
        run(as_full)
    full = run(lora_cfg(tmp_path / "full", tok, finetune_method="full", max_steps=2))
    with pytest.raises(ResumeError, match="trained with 'full', this run asks for 'lora'"):
        run(lora_cfg(tmp_path / "full", tok, max_steps=4, resume=str(full.output_dir)))
