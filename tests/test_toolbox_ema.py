"""EMA of the weights: the average itself, validation and best/ on it, checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import run, tiny_cfg
from safetensors.torch import load_file
from toolbox_helpers import assert_resume_is_bit_exact, state

from kronos_engine import TrainCallback
from kronos_engine.errors import ResumeError
from kronos_engine.training.validation import evaluate

DECAY = 0.8


class WeightsAfterEachStep(TrainCallback):
    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, ctx) -> None:
        self.snapshots.append(state(ctx.unwrapped_model))


def _expected_ema(snapshots: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    ema = {k: v.clone() for k, v in snapshots[0].items()}  # the first update copies
    for snap in snapshots[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                ema[k].lerp_(v, 1 - DECAY)
    return ema


def test_ema_is_the_average_and_validation_and_best_use_it(tmp_path):
    seen = WeightsAfterEachStep()
    # One validation, at the end (step 3): best/ is the average after step 3.
    cfg = tiny_cfg(tmp_path, ema=True, ema_decay=DECAY, max_steps=3, dropout=0.1)
    ctx = run(cfg, seen)
    expected = _expected_ema(seen.snapshots)
    averaged = state(ctx.eval_model)
    for key, value in expected.items():
        assert torch.allclose(averaged[key], value, rtol=0, atol=1e-7), key
    raw = seen.snapshots[-1]
    assert any(not torch.equal(raw[k], expected[k]) for k in raw)  # it is not the raw model
    best = load_file(str(ctx.output_dir / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    # The recorded validation metric is the metric of the averaged weights.
    metric = ctx.val_metrics["val_recon_mse"]
    ctx.unwrapped_model.load_state_dict(averaged)
    ctx.eval_model = None
    assert evaluate(ctx)["val_recon_mse"] == metric


def test_ema_is_in_every_checkpoint_and_resume_is_bit_exact(tmp_path):
    common = dict(ema=True, ema_decay=DECAY, dropout=0.2, grad_accum_steps=2, batch_size=4)
    common.update(ckpt_interval=1, keep_last=20, val_interval=4)
    straight, resumed = assert_resume_is_bit_exact(tmp_path, crash_step=5, **common)
    a, b = state(straight.eval_model), state(resumed.eval_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = resumed.output_dir / "checkpoints" / "step_5"
    saved = load_file(str(ckpt / "ema.safetensors"))
    assert "n_averaged" in saved and int(saved["n_averaged"]) == 5
    assert "ema.safetensors" in (ckpt / "manifest.json").read_text()


def test_resuming_a_run_without_ema_with_ema_on_is_refused(tmp_path):
    first = run(tiny_cfg(tmp_path, max_steps=2))
    with pytest.raises(ResumeError, match="no ema.safetensors.*ema=false"):
        run(tiny_cfg(tmp_path, max_steps=4, ema=True, resume=str(first.output_dir)))


def test_an_ema_built_in_python_checks_its_decay_as_the_config_does():
    from kronos_engine.callbacks.ema import EMA

    from kronos_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ema_decay: must lie in \(0, 1\), got 1.0"):
        EMA(1.0)
