"""Best and periodic checkpoints, and exact resume (bit-identical to an uninterrupted run)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from engine_helpers import Recorder, run, save_random_tokenizer, tiny_cfg, weights

from kronos_engine import TrainCallback
from kronos_engine.context import LEGACY_COUNTERS
from kronos_engine.errors import ConfigError, ResumeError
from kronos_engine.models import KronosTokenizer
from kronos_engine.run.checkpoints import find_resume_checkpoint, list_checkpoints, write_manifest


class Crash(Exception):
    pass


class CrashAfterStep(TrainCallback):
    """Simulates a kill right after step `k` (its checkpoint has been written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, ctx):
        if ctx.global_step == self.step:
            raise Crash(f"killed after step {self.step}")


def _train_records(output_dir):
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        r.pop("samples_per_s", None)
    return records


def test_best_and_periodic_checkpoint_contents(tmp_path):
    cfg = tiny_cfg(tmp_path, ckpt_interval=2, keep_last=2, val_interval=2)
    ctx = run(cfg)
    out = ctx.output_dir
    assert ctx.global_step == 12
    steps = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert steps == ["step_10", "step_12"]  # keep_last=2, epoch-end saves at 6 and 12 included
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    last = out / "checkpoints" / "step_12"
    names = {p.name for p in last.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.json",
        "trainer_state.json",
        "config.yaml",
        "manifest.json",
    }
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["counters"]["global_step"] == 12
    assert state["counters"]["epoch"] == 2 and state["counters"]["epoch_consumed"] == 0
    assert len(state["rng"]) == 1 and {"python", "numpy", "torch"} <= set(state["rng"][0])
    reloaded = KronosTokenizer.from_pretrained(last)
    for key, value in weights(ctx).items():
        assert torch.equal(reloaded.state_dict()[key], value)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["metric"] == "val_recon_mse" and best["value"] == ctx.best_metric
    assert best["step"] == ctx.best_step
    vals = [r for r in _train_records(out) if r["type"] == "val"]
    assert min(r["val_recon_mse"] for r in vals) == pytest.approx(ctx.best_metric)
    KronosTokenizer.from_pretrained(out / "best")  # public layout, strict load
    assert (out / "config.yaml").exists() and (out / "summary.json").exists()


def _straight_vs_crashed(tmp_path, crash_step: int, **common):
    """Run uninterrupted, then crash after `crash_step` and resume from the output dir."""
    straight_rec = Recorder()
    straight = run(tiny_cfg(tmp_path / "straight", **common), straight_rec)
    cfg = tiny_cfg(tmp_path / "crashed", **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(crash_step))
    resumed_rec = Recorder()
    resumed_cfg = tiny_cfg(tmp_path / "crashed", resume=str(cfg.resolved_output_dir), **common)
    resumed = run(resumed_cfg, resumed_rec)
    assert resumed.global_step == straight.global_step
    assert resumed_rec.losses == straight_rec.losses[crash_step:]  # bit-identical floats
    ws, wr = weights(straight), weights(resumed)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    return straight, resumed


RESUME_COMMON = dict(dropout=0.2, grad_accum_steps=2, batch_size=4, ckpt_interval=1, keep_last=20)


@pytest.mark.parametrize(
    "crash_step,workers",
    [(3, 0), (6, 0), (8, 2)],  # mid-epoch, at an epoch boundary, mid-epoch with DataLoader workers
)
def test_tokenizer_resume_is_bit_exact(tmp_path, crash_step, workers):
    common = dict(RESUME_COMMON, val_interval=4, num_workers=workers)
    straight, resumed = _straight_vs_crashed(tmp_path, crash_step, **common)
    assert resumed.global_step == 12
    assert _train_records(straight.output_dir) == _train_records(resumed.output_dir)
    assert resumed.best_metric == straight.best_metric


def _to_legacy_format(checkpoint, **changes):
    """Rewrite a checkpoint as the engine wrote it before callbacks saved their own state: the
    best and validation values in `counters` (with `changes`), no state for those callbacks."""
    path = checkpoint / "trainer_state.json"
    state = json.loads(path.read_text())
    assert not set(LEGACY_COUNTERS) & set(state["counters"])  # written in the new format
    best = state["callbacks"].pop("BestCheckpoint")
    val = state["callbacks"].pop("ValidationCallback")
    assert set(best) | set(val) == set(LEGACY_COUNTERS)
    state["counters"].update(best, **val, **changes)
    path.write_text(json.dumps(state, indent=1))
    write_manifest(checkpoint)


def test_a_checkpoint_with_best_and_validation_in_its_counters_still_resumes_exactly(tmp_path):
    common = dict(RESUME_COMMON, val_interval=2)
    straight = run(tiny_cfg(tmp_path / "straight", **common))
    cfg = tiny_cfg(tmp_path / "crashed", **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(7))
    out = cfg.resolved_output_dir
    _to_legacy_format(out / "checkpoints" / "step_7")
    resumed = run(tiny_cfg(tmp_path / "crashed", resume=str(out), **common))
    assert (resumed.best_metric, resumed.best_step) == (straight.best_metric, straight.best_step)
    assert resumed.val_metrics == straight.val_metrics
    # best/ was never replaced by a worse model, and the files read as one uninterrupted run.
    for name in ("best/best.json", "best/model.safetensors"):
        assert (out / name).read_bytes() == (straight.output_dir / name).read_bytes(), name
    assert _train_records(out) == _train_records(straight.output_dir)
    last = json.loads((out / "checkpoints" / "step_12" / "trainer_state.json").read_text())
    want = json.loads(
        (straight.output_dir / "checkpoints" / "step_12" / "trainer_state.json").read_text()
    )
    assert last["counters"] == want["counters"] and last["callbacks"] == want["callbacks"]


def test_a_legacy_checkpoints_best_is_kept_by_the_resumed_run(tmp_path):
    common = dict(RESUME_COMMON, val_interval=2)
    cfg = tiny_cfg(tmp_path, **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(7))
    out = cfg.resolved_output_dir
    best_before = (out / "best" / "model.safetensors").read_bytes()
    _to_legacy_format(out / "checkpoints" / "step_7", best_metric=-1.0)  # never beaten
    resumed = run(tiny_cfg(tmp_path, resume=str(out), **common))
    assert (resumed.best_metric, resumed.best_step) == (-1.0, 6)
    assert (out / "best" / "model.safetensors").read_bytes() == best_before
    assert json.loads((out / "summary.json").read_text())["best_metric"] == -1.0


def test_resuming_a_finished_legacy_checkpoint_does_not_validate_again(tmp_path):
    cfg = tiny_cfg(tmp_path, val_interval=2, max_steps=4)
    first = run(cfg)
    records = (first.output_dir / "metrics.jsonl").read_text()
    _to_legacy_format(first.output_dir / "checkpoints" / "step_4")
    resumed = run(tiny_cfg(tmp_path, val_interval=2, max_steps=4, resume=str(first.output_dir)))
    assert (resumed.last_val_step, resumed.val_metrics) == (4, first.val_metrics)
    assert (first.output_dir / "metrics.jsonl").read_text() == records


def test_predictor_resume_is_bit_exact_with_sampled_s1_and_dropout(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    common = dict(RESUME_COMMON, train_type="predictor", tokenizer_path=str(tok))
    _straight_vs_crashed(tmp_path, 4, teacher_forcing=False, **common)


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path, ckpt_interval=1, keep_last=3, max_steps=5)
    ctx = run(cfg)
    latest = ctx.output_dir / "checkpoints" / "step_5"
    data = (latest / "model.safetensors").read_bytes()
    (latest / "model.safetensors").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="kronos_engine"):
        chosen = find_resume_checkpoint(ctx.output_dir)
    assert chosen.name == "step_4"
    assert "truncated" in caplog.text and "step_5" in caplog.text
    with pytest.raises(ResumeError, match="step_5"):
        find_resume_checkpoint(latest)  # naming the damaged folder itself is an error
    (ctx.output_dir / "checkpoints" / "step_4" / "manifest.json").unlink()
    assert find_resume_checkpoint(ctx.output_dir).name == "step_3"


def test_resume_rejects_a_checkpoint_of_the_other_train_type(tmp_path):
    ctx = run(tiny_cfg(tmp_path, max_steps=2))
    tok = save_random_tokenizer(tmp_path / "tok")
    cfg = tiny_cfg(
        tmp_path / "p",
        train_type="predictor",
        tokenizer_path=str(tok),
        resume=str(ctx.output_dir),
        output_dir=str(ctx.output_dir),  # a resumed run continues in its own folder
    )
    with pytest.raises(ResumeError, match="train_type 'tokenizer'"):
        run(cfg)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_resume_with_a_longer_schedule_continues_on_the_new_one(tmp_path, scheduler, caplog):
    class LR(TrainCallback):
        def __init__(self):
            self.lrs = []

        def on_step_end(self, ctx):
            self.lrs.append(ctx.lr)

    common = dict(scheduler=scheduler, ckpt_interval=2, epochs=5)
    reference = LR()
    run(tiny_cfg(tmp_path / "ref", max_steps=8, **common), reference)
    first = tiny_cfg(tmp_path / "run", max_steps=4, **common)
    run(first)
    extended = LR()
    resumed_cfg = tiny_cfg(
        tmp_path / "run", max_steps=8, resume=str(first.resolved_output_dir), **common
    )
    with caplog.at_level(logging.WARNING, logger="kronos_engine"):
        ctx = run(resumed_cfg, extended)
    assert ctx.global_step == 8
    assert extended.lrs == reference.lrs[4:]  # the 8-step schedule from step 5 on
    assert "changed max_steps" in caplog.text


def test_resume_with_a_schedule_that_ends_before_the_checkpoint_is_one_error(tmp_path):
    first = tiny_cfg(tmp_path, max_steps=4, ckpt_interval=2)
    ctx = run(first)
    before = {p: p.read_bytes() for p in ctx.output_dir.rglob("*") if p.is_file()}
    shorter = tiny_cfg(tmp_path, max_steps=3, resume=str(first.resolved_output_dir))
    with pytest.raises(ResumeError, match="at step 4, past the end .* max_steps >= 4"):
        run(shorter)
    assert {p: p.read_bytes() for p in ctx.output_dir.rglob("*") if p.is_file()} == before


def test_a_fresh_run_never_replaces_an_earlier_run_unless_asked(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=2)
    ctx = run(cfg)
    before = {p: p.read_bytes() for p in ctx.output_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="output_dir: .* already holds a run .*overwrite=true"):
        run(tiny_cfg(tmp_path, max_steps=3))
    after = {p: p.read_bytes() for p in ctx.output_dir.rglob("*") if p.is_file()}
    assert before == after  # nothing touched
    again = run(tiny_cfg(tmp_path, max_steps=3, overwrite=True))
    assert [p.name for p in list_checkpoints(again.output_dir / "checkpoints")] == ["step_3"]
    records = (again.output_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records if '"train"' in r] == [1, 2, 3]
