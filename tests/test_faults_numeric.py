"""Property 5: a NaN/inf loss or gradient stops the run with a message naming the step and
keeps the last good checkpoint intact (resuming from it ends exactly as an uninterrupted run);
`nan_policy=skip` drops such steps and counts them. A non-finite validation metric never
becomes the best model.

The faults are injected by `faultinject.FaultyTokenizer` (FAULT_NAN) through the real CLI.
"""

from __future__ import annotations

import json
import math

import faultinject as fi
import pytest
import torch

from kronos_engine.run.checkpoints import find_resume_checkpoint, verify_checkpoint

EXIT_FAILED = 1


def _adam_state(out, step: int) -> dict:
    path = out / "checkpoints" / f"step_{step}" / "optimizer.pt"
    return torch.load(path, weights_only=True)["state"]


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[i].keys() == b[i].keys() and all(torch.equal(a[i][k], b[i][k]) for k in a[i]) for i in a
    )


@pytest.mark.parametrize(
    "fault,what",
    [
        ("loss:5", "loss is nan"),
        ("loss:5:inf", "loss is inf"),
        ("grad:5", "gradient norm is nan"),  # the loss itself is finite
    ],
)
def test_non_finite_step_stops_naming_it_and_keeps_the_last_checkpoint(
    tmp_path_factory, tmp_path, fault, what
):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out)
    result = fi.run(args, tmp_path / "logs", FAULT_NAN=fault)
    assert result.returncode == EXIT_FAILED, result
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"error: step 5 (epoch 0): {what}; stopped before the update"), last
    assert "Traceback" not in result.stderr
    summary = fi.summary(out)
    assert summary["status"] == "failed" and summary["global_step"] == 4
    assert "NonFiniteError: step 5" in summary["error"]
    # Step 4's checkpoint is the newest and intact; nothing of step 5 was written.
    assert fi.steps(out)[-1] == 4
    verify_checkpoint(out / "checkpoints" / "step_4")
    assert find_resume_checkpoint(out).name == "step_4"
    assert not (out / "checkpoints" / ".tmp_step_5").exists()
    assert max(r["step"] for r in fi.metrics(out)) == 4
    if fault != "loss:5":
        return  # one resume is enough to show the checkpoint is good
    # Without the fault, resuming from it ends exactly as the uninterrupted run.
    resumed = fi.run(args + [f"--resume={out}"], tmp_path / "logs")
    assert resumed.returncode == 0, resumed
    fi.assert_same_run(out, reference)


def test_skip_policy_drops_the_bad_step_and_counts_it(tmp_path):
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out) + ["--nan_policy=skip", "--keep_last=20"]
    result = fi.run(args, tmp_path / "logs", FAULT_NAN="loss:5")
    assert result.returncode == 0, result
    assert "step 5: loss is nan; skipping this update (nan_policy=skip)" in result.stderr
    summary = fi.summary(out)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    assert summary["global_step"] == fi.LAST_STEP and math.isfinite(summary["last_loss"])
    # The update was dropped: step 5 left the weights and the Adam moments as step 4 had them
    # (the LR schedule still advanced, as it counts optimizer steps taken or not).
    before, after = fi.checkpoint_bytes(out, 4), fi.checkpoint_bytes(out, 5)
    assert after["model.safetensors"] == before["model.safetensors"]
    moments = [_adam_state(out, step) for step in (4, 5, 6)]
    assert _same_tensors(moments[0], moments[1])
    assert not _same_tensors(moments[1], moments[2])  # step 6 did update them
    assert fi.trainer_state(out, 5)["counters"]["skipped_steps"] == 1
    record = next(r for r in fi.metrics(out) if r["type"] == "train" and r["step"] == 5)
    assert math.isnan(record["loss"])
    # Every other step trained normally: the final weights are finite and did change.
    assert fi.checkpoint_bytes(out, 12)["model.safetensors"] != before["model.safetensors"]


def test_non_finite_validation_metric_is_never_the_best_model(tmp_path_factory, tmp_path):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    out = tmp_path / "run"
    result = fi.run(fi.train_args("tokenizer", out), tmp_path / "logs", FAULT_NAN="val:12")
    assert result.returncode == 0, result
    val = [r for r in fi.metrics(out) if r["type"] == "val"]
    assert [r["step"] for r in val] == [3, 6, 9, 12]
    assert math.isnan(val[-1]["val_recon_mse"])
    best = json.loads((out / "best" / "best.json").read_text())
    ref_val = {r["step"]: r["val_recon_mse"] for r in fi.metrics(reference) if r["type"] == "val"}
    assert best["step"] == 9 and best["value"] == ref_val[9]
    summary = fi.summary(out)
    assert summary["best_step"] == 9 and summary["best_metric"] == ref_val[9]


def test_non_finite_first_validation_does_not_trigger_early_stopping(tmp_path):
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out) + ["--early_stopping_patience=2"]
    result = fi.run(args, tmp_path / "logs", FAULT_NAN="val:3")
    assert result.returncode == 0, result
    val = [r["val_recon_mse"] for r in fi.metrics(out) if r["type"] == "val"]
    assert math.isnan(val[0]) and val[1:] == sorted(val[1:], reverse=True)  # then improving
    summary = fi.summary(out)
    assert summary["stop_reason"] is None and summary["global_step"] == fi.LAST_STEP
    assert summary["best_step"] == fi.LAST_STEP


def test_a_guard_built_in_python_checks_its_policy_as_the_config_does():
    from kronos_engine.callbacks.non_finite import NonFiniteGuard

    from kronos_engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"nan_policy: 'ignore' is not allowed; choose one of"):
        NonFiniteGuard("ignore")
