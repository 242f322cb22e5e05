"""`compile: true`: the model is torch.compile'd in place, checkpoints keep plain state-dict keys,
and resume stays exact (the compiled run is slow to build on CPU: that test is marked slow)."""

from __future__ import annotations

import pytest
from engine_helpers import tiny_cfg
from safetensors.torch import load_file
from toolbox_helpers import assert_resume_is_bit_exact

from kronos_engine import TrainContextBuilder
from kronos_engine.models import KronosTokenizer
from kronos_engine.training.resume import save_checkpoint


def test_compile_wraps_the_model_in_place_and_checkpoints_keep_plain_keys(tmp_path):
    ctx = TrainContextBuilder(tiny_cfg(tmp_path, compile=True)).build()
    model = ctx.unwrapped_model
    assert model._compiled_call_impl is not None  # forward goes through torch.compile
    assert not any("_orig_mod" in k for k in model.state_dict())
    path = save_checkpoint(ctx, ctx.output_dir / "checkpoints", keep_last=1)
    saved = load_file(str(path / "model.safetensors"))
    assert saved.keys() == KronosTokenizer.from_pretrained(path).state_dict().keys()
    plain = TrainContextBuilder(tiny_cfg(tmp_path / "plain")).build()
    assert plain.unwrapped_model._compiled_call_impl is None  # off by default


@pytest.mark.slow
def test_compiled_training_resumes_bit_exact(tmp_path):
    straight, resumed = assert_resume_is_bit_exact(
        tmp_path,
        crash_step=3,
        compile=True,
        dropout=0.1,
        max_steps=6,
        ckpt_interval=1,
        keep_last=20,
        val_interval=3,
    )
    keys = load_file(str(resumed.output_dir / "best" / "model.safetensors")).keys()
    assert not any("_orig_mod" in k for k in keys)
