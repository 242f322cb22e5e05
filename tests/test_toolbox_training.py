"""Fine-tuning toolbox, training tricks: label smoothing, SGDR and WSD schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import run, save_random_tokenizer, tiny_cfg
from toolbox_helpers import LRs, assert_resume_is_bit_exact

from kronos_engine import TrainConfig
from kronos_engine.errors import ConfigError
from kronos_engine.models import build_predictor
from kronos_engine.training.optim import WarmupRestarts, WarmupStableDecay

# ---------------------------------------------------------------- label smoothing


def test_label_smoothing_mixes_targets_with_the_uniform_distribution():
    torch.manual_seed(0)
    head = build_predictor("tiny").head
    v1, v2 = head.vocab_s1, head.vocab_s2
    l1, l2 = torch.randn(3, 5, v1), torch.randn(3, 5, v2)
    t1, t2 = torch.randint(0, v1, (3, 5)), torch.randint(0, v2, (3, 5))
    plain = head.compute_loss(l1, l2, t1, t2)
    assert [x.item() for x in head.compute_loss(l1, l2, t1, t2, label_smoothing=0.0)] == [
        x.item() for x in plain
    ]
    eps = 0.2

    def by_hand(logits, targets):
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return ((1 - eps) * nll - eps * logp.mean(-1)).mean()

    loss, ce1, ce2 = head.compute_loss(l1, l2, t1, t2, label_smoothing=eps)
    assert ce1.item() == pytest.approx(by_hand(l1, t1).item(), rel=1e-6)
    assert ce2.item() == pytest.approx(by_hand(l2, t2).item(), rel=1e-6)
    assert loss.item() == pytest.approx((ce1.item() + ce2.item()) / 2, rel=1e-6)
    assert ce1.item() != plain[1].item()


def test_label_smoothing_is_off_by_default_and_changes_only_the_training_loss(tmp_path):
    assert TrainConfig().label_smoothing == 0.0
    tok = save_random_tokenizer(tmp_path / "tok")
    # A negligible lr: both runs validate (almost) the same weights after their one step.
    common = dict(train_type="predictor", tokenizer_path=str(tok), max_steps=1, lr=1e-12)
    common.update(teacher_forcing=True, dropout=0.0)
    plain = run(tiny_cfg(tmp_path / "a", **common))
    smooth = run(tiny_cfg(tmp_path / "b", label_smoothing=0.1, **common))
    assert abs(smooth.last_metrics["s1_loss"] - plain.last_metrics["s1_loss"]) > 1e-3
    # Validation stays the plain cross-entropy, comparable across settings.
    assert smooth.val_metrics["val_loss"] == pytest.approx(plain.val_metrics["val_loss"], rel=1e-6)
    with pytest.raises(ConfigError, match="label_smoothing: must lie in"):
        tiny_cfg(tmp_path, label_smoothing=1.0)


# ---------------------------------------------------------------- schedules


def test_sgdr_restarts_at_the_peak_with_growing_cycles():
    f = WarmupRestarts(
        total_steps=100, warmup_ratio=0.1, div_factor=10, cycle_steps=10, cycle_mult=2
    )
    assert f(0) == pytest.approx(0.1) and f(10) == 1.0  # warm-up ends at the peak
    assert f(15) == pytest.approx(0.5)  # half-way through the first 10-step cycle
    assert f(19) < 0.03 and f(20) == 1.0  # restart
    assert f(30) == pytest.approx(0.5) and f(40) == 1.0  # the second cycle lasts 20 steps
    assert f(60) == pytest.approx(0.5) and f(80) == 1.0  # then 40
    default = WarmupRestarts(100, 0.1, 10, None, 1)
    assert default.cycle == 22  # a quarter of the 90 post-warm-up steps


def test_wsd_warms_up_holds_and_decays_to_zero():
    f = WarmupStableDecay(total_steps=100, warmup_ratio=0.1, div_factor=10, decay_ratio=0.2)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55)
    assert [f(s) for s in (10, 50, 79, 80)] == [1.0, 1.0, 1.0, 1.0]
    assert f(90) == pytest.approx(0.5) and f(99) == pytest.approx(0.05) and f(100) == 0.0


@pytest.mark.parametrize("scheduler", ["sgdr", "wsd"])
def test_new_schedulers_drive_the_optimizer(tmp_path, scheduler):
    lrs = LRs()
    ctx = run(tiny_cfg(tmp_path, scheduler=scheduler, lr=1e-3, epochs=4, sgdr_cycle_steps=5), lrs)
    assert ctx.total_steps == len(lrs.lrs) == 24
    assert max(lrs.lrs) == pytest.approx(1e-3)
    if scheduler == "sgdr":  # warm-up of round(0.03 * 24) = 1 step, then 5-step cycles
        peaks = [i for i, lr in enumerate(lrs.lrs, start=1) if math.isclose(lr, 1e-3)]
        assert peaks == [1, 6, 11, 16, 21]
    else:  # stable until the last round(0.2 * 24) = 5 steps, then down to zero
        assert all(math.isclose(lr, 1e-3) for lr in lrs.lrs[:19])
        assert lrs.lrs[-1] == 0.0 and lrs.lrs[19:] == sorted(lrs.lrs[19:], reverse=True)


@pytest.mark.parametrize("scheduler", ["sgdr", "wsd"])
def test_new_schedulers_resume_bit_exact(tmp_path, scheduler):
    assert_resume_is_bit_exact(
        tmp_path,
        crash_step=5,
        scheduler=scheduler,
        sgdr_cycle_steps=3,
        ckpt_interval=1,
        keep_last=20,
        val_interval=4,
    )


def test_schedule_keys_are_checked():
    with pytest.raises(ConfigError, match="scheduler: 'sgdrr' is not allowed"):
        TrainConfig(scheduler="sgdrr").validate()
    with pytest.raises(ConfigError, match="sgdr_cycle_mult: must be >= 1"):
        TrainConfig(sgdr_cycle_mult=0).validate()
    with pytest.raises(ConfigError, match="wsd_decay_ratio: must lie in"):
        TrainConfig(wsd_decay_ratio=1.5).validate()
