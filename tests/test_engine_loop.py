"""The training loop: hook order, accumulation equivalence, stopping, plug-ins, bf16."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import Recorder, run, tiny_cfg, weights
from kronos_engine.callbacks import ActivationCheckpointing, EarlyStopping
from kronos_engine.strategies import TokenizerReconStrategy

from kronos_engine import STRATEGIES, TrainCallback
from kronos_engine.errors import ConfigError
from kronos_engine.strategy import StepOutput, ValOutput


def test_hooks_fire_in_order(tmp_path):
    rec = Recorder()
    cfg = tiny_cfg(tmp_path, grad_accum_steps=2, val_interval=2, epochs=2)
    ctx = run(cfg, rec)
    names = [name for name, _ in rec.calls]
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    assert names.count("on_epoch_begin") == names.count("on_epoch_end") == 2
    # 48 samples / batch 8 = 6 micro-batches = 3 steps per epoch
    assert names.count("on_batch_begin") == names.count("on_batch_end") == 12
    assert names.count("on_optimizer_step") == names.count("on_step_end") == 6 == ctx.global_step
    # Within a step: begin/end pairs for each micro-batch, then optimizer step, then step end.
    step_block = names[names.index("on_batch_begin") :][:6]
    assert step_block == [
        "on_batch_begin",
        "on_batch_end",
        "on_batch_begin",
        "on_batch_end",
        "on_optimizer_step",
        "on_step_end",
    ]
    # on_optimizer_step sees the step before it is counted, on_step_end after.
    opt_steps = [s for n, s in rec.calls if n == "on_optimizer_step"]
    end_steps = [s for n, s in rec.calls if n == "on_step_end"]
    assert opt_steps == [0, 1, 2, 3, 4, 5] and end_steps == [1, 2, 3, 4, 5, 6]
    # Validation every 2 steps plus epoch end (step 3) without repeating step 6.
    val_steps = [s for n, s in rec.calls if n == "on_validation_end"]
    assert val_steps == [2, 3, 4, 6]
    # An epoch ends after its last step end and its validation.
    first_epoch_end = names.index("on_epoch_end")
    assert names[first_epoch_end - 1] == "on_validation_end"
    assert "on_error" not in names


def test_error_hook_fires_and_summary_records_failure(tmp_path):
    class Boom(TrainCallback):
        def on_step_end(self, ctx):
            if ctx.global_step == 2:
                raise RuntimeError("boom at step 2")

    rec = Recorder()
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, Boom(), rec)
    assert rec.calls[-1][0] == "on_error"
    summary = json.loads((cfg.resolved_output_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom" in summary["error"]


def _linear_loss_cfg(tmp_path, train_type, **common):
    """Tokenizer runs start from a tokenizer with zeta=0: the BSQ codebook entropy is a
    statistic of the whole batch (entropy of the batch-mean code usage), so it is not a sum
    over micro-batches and no accumulation scheme can make it exact (nor is it in the public
    recipe). Every other loss term is a per-sample mean and must accumulate exactly."""
    from kronos_engine.models import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer("tiny", zeta=0.0).save_pretrained(tmp_path / "tok_zeta0")
    if train_type == "tokenizer":
        return dict(pretrained_tokenizer=str(tok), **common)
    return dict(train_type="predictor", tokenizer_path=str(tok), teacher_forcing=True, **common)


@pytest.mark.parametrize("train_type", ["tokenizer", "predictor"])
@pytest.mark.parametrize("samples", [48, 44])  # 44: a short last window and a ragged batch
def test_accumulation_equals_one_big_batch(tmp_path, samples, train_type):
    common = _linear_loss_cfg(
        tmp_path, train_type, train_samples_per_epoch=samples, epochs=1, val_samples=8
    )
    rec_small, rec_big = Recorder(), Recorder()
    small = run(tiny_cfg(tmp_path / "a", batch_size=4, grad_accum_steps=4, **common), rec_small)
    big = run(tiny_cfg(tmp_path / "b", batch_size=16, grad_accum_steps=1, **common), rec_big)
    assert small.global_step == big.global_step == 3
    torch.testing.assert_close(rec_small.losses, rec_big.losses, rtol=1e-5, atol=1e-6)
    ws, wb = weights(small), weights(big)
    for key in ws:
        torch.testing.assert_close(ws[key], wb[key], rtol=1e-4, atol=1e-6, msg=key)


def test_codebook_entropy_is_the_only_batch_dependent_tokenizer_term(tmp_path):
    """With the public zeta the first-step losses differ, but by < 0.1%: documented, bounded."""
    common = dict(train_samples_per_epoch=16, epochs=1, val_samples=8)
    rec_small, rec_big = Recorder(), Recorder()
    run(tiny_cfg(tmp_path / "a", batch_size=4, grad_accum_steps=4, **common), rec_small)
    run(tiny_cfg(tmp_path / "b", batch_size=16, grad_accum_steps=1, **common), rec_big)
    assert rec_small.losses[0] != rec_big.losses[0]
    assert rec_small.losses[0] == pytest.approx(rec_big.losses[0], rel=1e-3)


def test_max_steps_stops_mid_epoch_and_validates_at_the_end(tmp_path):
    rec = Recorder()
    ctx = run(tiny_cfg(tmp_path, max_steps=4, epochs=5), rec)
    assert ctx.global_step == 4 and ctx.stop_reason == "max_steps"
    assert ctx.last_val_step == 4
    assert ctx.total_steps == 4
    summary = json.loads((ctx.output_dir / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["status"] == "completed"


@STRATEGIES.register("test_l1_recon")
class L1ReconStrategy(TokenizerReconStrategy):
    """A user strategy: L1 reconstruction of the full path only."""

    metric_name = "val_l1"

    def training_step(self, model, batch, ctx) -> StepOutput:
        x = batch[0]
        (_, z), bsq_loss, _, _ = model(x)
        l1 = F.l1_loss(z, x)
        return StepOutput(loss=l1 + bsq_loss, parts={"l1": l1.detach()})

    def validation_step(self, model, batch, ctx) -> ValOutput:
        x = batch[0]
        (_, z), _, _, _ = model(x)
        return ValOutput(metric_sum=(z - x).abs().flatten(1).mean(1).sum(), count=x.shape[0])


def test_custom_strategy_by_name_and_custom_callback(tmp_path):
    seen = []

    class StopAfterThree(TrainCallback):
        def on_step_end(self, ctx):
            seen.append(ctx.last_metrics["l1"])
            if ctx.global_step == 3:
                ctx.request_stop("user")

    ctx = run(tiny_cfg(tmp_path, strategy="test_l1_recon"), StopAfterThree())
    assert isinstance(ctx.strategy, L1ReconStrategy)
    assert ctx.global_step == 3 and ctx.stop_reason == "user" and len(seen) == 3
    best = json.loads((ctx.output_dir / "best" / "best.json").read_text())
    assert best["metric"] == "val_l1"
    records = [json.loads(x) for x in (ctx.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]
    assert all("l1" in r for r in records if r["type"] == "train")


def test_bf16_autocast_runs_on_cpu(tmp_path):
    dtypes = []

    class DtypeProbe(TrainCallback):
        def on_batch_end(self, ctx, output):
            x = torch.randn(2, 25, 6)
            with ctx.executor.autocast():
                (_, z), _, _, _ = ctx.model(x)
            dtypes.append(z.dtype)

    ctx = run(tiny_cfg(tmp_path, precision="bf16", max_steps=3), DtypeProbe())
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert ctx.global_step == 3
    assert all(torch.isfinite(torch.tensor(ctx.last_loss)) for _ in [0])
    assert next(ctx.unwrapped_model.parameters()).dtype == torch.float32


def test_early_stopping_stops_after_patience(tmp_path):
    # min_delta=10: no later validation counts as an improvement, so patience runs out.
    ctx = run(tiny_cfg(tmp_path, val_interval=1, epochs=3), EarlyStopping(2, min_delta=10.0))
    assert ctx.stop_reason == "early_stopping"
    assert ctx.global_step == 3  # best at step 1, no gain at 2 and 3
    assert ctx.callbacks.find(EarlyStopping).state_dict()["bad_validations"] == 2


def test_grad_clip_bounds_the_update_norm(tmp_path):
    norms = []

    class AfterClip(TrainCallback):
        def on_optimizer_step(self, ctx):
            g = [p.grad for p in ctx.model.parameters() if p.grad is not None]
            norms.append((ctx.grad_norm, torch.norm(torch.stack([x.norm() for x in g])).item()))

    run(tiny_cfg(tmp_path, max_grad_norm=1e-3, max_steps=3), AfterClip())
    assert norms and all(pre > 1e-3 and post <= 1e-3 * 1.0001 for pre, post in norms)


def test_activation_checkpointing_keeps_losses_identical(tmp_path):
    common = dict(dropout=0.2, max_steps=4)
    plain, ckpt = Recorder(), Recorder()
    run(tiny_cfg(tmp_path / "a", **common), plain)
    ctx = run(tiny_cfg(tmp_path / "b", activation_checkpointing=True, **common), ckpt)
    assert ctx.callbacks.find(ActivationCheckpointing) is not None
    assert plain.losses == ckpt.losses


def test_callbacks_named_as_module_class_in_the_config(tmp_path):
    ctx = run(tiny_cfg(tmp_path, callbacks=["engine_helpers:Recorder"], max_steps=2))
    recorder = ctx.callbacks.find(Recorder)
    assert recorder is not None and recorder.calls[0][0] == "on_train_begin"
    # Built from Python, the config check names the key, as the command line does.
    with pytest.raises(
        ConfigError, match="callbacks: module 'engine_helpers' has no attribute 'Nope'"
    ):
        run(tiny_cfg(tmp_path / "x", callbacks=["engine_helpers:Nope"]))


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "constant"])
def test_schedulers_follow_the_recipe(tmp_path, scheduler):
    lrs = []

    class LR(TrainCallback):
        def on_step_end(self, ctx):
            lrs.append(ctx.lr)

    cfg = tiny_cfg(tmp_path, scheduler=scheduler, lr=1e-3, epochs=4)
    ctx = run(cfg, LR())
    assert ctx.total_steps == len(lrs) == 24
    if scheduler == "constant":
        assert lrs == [1e-3] * 24
        return
    peak = max(lrs)
    assert peak == pytest.approx(1e-3, rel=0.05)
    assert lrs[-1] < 1e-4  # annealed
    optimizer = ctx.optimizer
    assert optimizer.defaults["weight_decay"] == 0.1
    assert optimizer.defaults["betas"] == (0.9, 0.95)
