"""The toolbox under torchrun: LoRA adapters, EMA and a tracker with 2 gloo processes train as
1 process with the same global batch, and only rank 0 tracks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_engine_distributed import _config, _launch


def test_lora_ema_and_tensorboard_under_two_processes_match_one(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("tensorboard")
    from kronos_engine.models import Kronos, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer("tiny", zeta=0.0).save_pretrained(tmp_path / "tok")
    extra = {"train_type": "predictor", "tokenizer_path": str(tok), "teacher_forcing": True}
    extra.update(finetune_method="lora", lr=1e-2, lora_dropout=0.0, ema=True, ema_decay=0.8)
    extra.update(loggers=["tensorboard"])
    one = _launch(_config(tmp_path / "one", batch_size=8, **extra), 1, tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(_config(tmp_path / "two", batch_size=4, **extra), 2, tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = json.loads((tmp_path / "one" / "losses_rank0.json").read_text())
    r2 = [json.loads((tmp_path / "two" / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    torch.testing.assert_close(r2[0]["losses"], r1["losses"], rtol=1e-5, atol=1e-6)
    assert r2[0]["val"]["val_loss"] == pytest.approx(r1["val"]["val_loss"], rel=1e-5)  # EMA
    w1 = load_file(str(tmp_path / "one" / "final.safetensors"))
    assert any("lora_A" in k for k in w1)
    # The models compared as they act: merged (base + B @ A), the EMA weights of best/. (The
    # factors alone are ill-conditioned: A's first gradients are ~0 while B is ~0, and Adam
    # normalises that float noise.)
    Kronos.from_pretrained(tmp_path / "two" / "best")  # merged, public layout
    b1 = load_file(str(tmp_path / "one" / "best" / "model.safetensors"))
    b2 = load_file(str(tmp_path / "two" / "best" / "model.safetensors"))
    assert b1.keys() == b2.keys()
    for key in b1:
        torch.testing.assert_close(b2[key], b1[key], rtol=1e-4, atol=1e-5, msg=key)
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1  # rank 0 only
