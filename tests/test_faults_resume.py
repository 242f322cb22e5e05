"""Properties 1 and 2: a run SIGKILLed anywhere and resumed from its output dir ends
bit-identical to an uninterrupted run, and no kill ever leaves a checkpoint that resume would
pick up half-written; damaged checkpoints are reported and skipped.

Everything goes through `scripts/train.py` in subprocesses with the same flags as the reference
run (tiny preset, grad_accum_steps=2, num_workers=2, dropout=0.1, a checkpoint every step,
validation every 3 of 12 steps); only the FAULT_* environment differs (see faultinject.py).
"""

from __future__ import annotations

import logging

import faultinject as fi
import pytest

from kronos_engine.errors import ResumeError
from kronos_engine.run.checkpoints import find_resume_checkpoint, verify_checkpoint

KILLED = -9

# (FAULT_KILL, newest intact checkpoint afterwards, leftover temporary folder or None)
KILL_POINTS = {
    "mid_window": ("batch_end:3", 2, None),  # between the 2 micro-batches of step 3
    "during_validation": ("val:6:2", 5, None),  # validation runs before step 6's checkpoint
    "during_epoch_end_write": ("ckpt_write_epoch:6", 6, ".tmp_step_6"),  # step_6 re-save
    "during_checkpoint_write": ("ckpt_write:8", 7, ".tmp_step_8"),
    "after_checkpoint": ("step_end:10", 10, None),
}


def _check_kill(out, result, newest: int, leftover: str | None) -> None:
    assert result.returncode == KILLED, result
    assert "faultinject: SIGKILL" in result.stderr
    assert fi.steps(out)[-1] == newest
    assert find_resume_checkpoint(out).name == f"step_{newest}"
    if leftover is not None:
        tmp = out / "checkpoints" / leftover
        assert tmp.is_dir() and not (tmp / "manifest.json").exists()
        assert (tmp / "model.safetensors").is_file()  # the kill really was mid-write


def _kill_chain(tmp_path, reference, tokenizer, train_type: str, points: list[str]) -> None:
    """Kill the same run at each point in turn, resuming from its output dir every time."""
    out = tmp_path / "run"
    args = fi.train_args(train_type, out, tokenizer)
    resumed_from = None
    for name in points:
        kill, newest, leftover = KILL_POINTS[name]
        resume = [f"--resume={out}"] if resumed_from is not None else []
        result = fi.run(args + resume, tmp_path / "logs", FAULT_KILL=kill)
        if resumed_from is not None:
            assert f"resumed from {out / 'checkpoints' / resumed_from}" in result.stderr
        _check_kill(out, result, newest, leftover)
        resumed_from = f"step_{newest}"
    result = fi.run(args + [f"--resume={out}"], tmp_path / "logs")
    assert result.returncode == 0, result
    assert f"resumed from {out / 'checkpoints' / resumed_from}" in result.stderr
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    fi.assert_same_run(out, reference)


def test_tokenizer_killed_at_every_kind_of_point_resumes_bit_identical(tmp_path_factory, tmp_path):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    _kill_chain(tmp_path, reference, None, "tokenizer", list(KILL_POINTS))


def test_predictor_killed_mid_window_in_validation_and_mid_write_resumes_bit_identical(
    tmp_path_factory, tmp_path
):
    # Sampled s1 (teacher_forcing=false) draws from the global RNG: resuming must restore it.
    reference, tokenizer = fi.reference_run(tmp_path_factory, "predictor")
    points = ["mid_window", "during_validation", "during_checkpoint_write"]
    _kill_chain(tmp_path, reference, tokenizer, "predictor", points)


@pytest.mark.slow
@pytest.mark.parametrize("train_type", ["tokenizer", "predictor"])
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_each_kill_point_alone(tmp_path_factory, tmp_path, train_type, point):
    reference, tokenizer = fi.reference_run(tmp_path_factory, train_type)
    _kill_chain(tmp_path, reference, tokenizer, train_type, [point])


@pytest.mark.slow
def test_predictor_full_kill_chain(tmp_path_factory, tmp_path):
    reference, tokenizer = fi.reference_run(tmp_path_factory, "predictor")
    _kill_chain(tmp_path, reference, tokenizer, "predictor", list(KILL_POINTS))


# ------------------------------------------------------------------ property 2: atomic writes

# (operation, step, newest intact checkpoint after the kill); see faultinject.CKPT_OPS. Each
# kill is at a later step than the previous resume point, so one run walks through all of them.
CKPT_OP_CHAIN = [
    ("model_torn", 2, 1),
    ("optimizer_torn", 3, 2),
    ("state_written", 4, 3),
    ("manifest_torn", 5, 4),
    ("between_renames", 6, 5),  # the epoch-end re-save moves step_6 aside: falls back to 5
    ("before_rename", 8, 7),
    ("mid_prune", 10, 10),  # step_10 is in place; the pruned step_7 is half deleted
]


@pytest.mark.slow
def test_killed_at_every_checkpoint_write_operation_never_resumes_a_partial_one(
    tmp_path_factory, tmp_path
):
    assert sorted(op for op, _, _ in CKPT_OP_CHAIN) == sorted(fi.CKPT_OPS)
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out)
    for i, (op, step, newest) in enumerate(CKPT_OP_CHAIN):
        resume = [f"--resume={out}"] if i else []
        result = fi.run(args + resume, tmp_path / "logs", FAULT_KILL=f"ckpt_op:{step}:{op}")
        # Killed by the armed fault itself (a fault patched where nothing looks it up would
        # leave the run to finish with rc 0).
        assert result.returncode == KILLED, (op, result)
        kill_line = [ln for ln in result.stderr.splitlines() if "faultinject: SIGKILL" in ln]
        assert kill_line and f"step {step}" in kill_line[0], (op, result)
        assert find_resume_checkpoint(out).name == f"step_{newest}", op
        # Whatever is on disk under a step_<N> name is complete; nothing else is considered.
        for path in (out / "checkpoints").iterdir():
            if path.name.startswith("step_") and path.name != "step_7":
                verify_checkpoint(path)
        if op == "mid_prune":
            with pytest.raises(ResumeError):
                verify_checkpoint(out / "checkpoints" / "step_7")
    result = fi.run(args + [f"--resume={out}"], tmp_path / "logs")
    assert result.returncode == 0, result
    assert f"resumed from {out / 'checkpoints' / 'step_10'}" in result.stderr
    fi.assert_same_run(out, reference)


def test_damaged_checkpoints_are_reported_and_resume_falls_back(tmp_path_factory, tmp_path):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out)
    killed = fi.run(args, tmp_path / "logs", FAULT_KILL="step_end:5")
    assert killed.returncode == KILLED, killed
    assert fi.steps(out) == [3, 4, 5]
    ckpts = out / "checkpoints"
    model = ckpts / "step_5" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])  # truncated
    optimizer = ckpts / "step_4" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit, same size
    optimizer.write_bytes(bytes(data))

    result = fi.run(args + [f"--resume={out}"], tmp_path / "logs")
    assert result.returncode == 0, result
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert any(f"{model}: size 1000 != " in w and "truncated" in w for w in warnings), warnings
    assert any(f"{optimizer}: checksum does not match" in w for w in warnings), warnings
    assert f"resumed from {ckpts / 'step_3'} at step 3" in result.stderr
    fi.assert_same_run(out, reference)


def test_a_folder_named_as_the_resume_point_must_be_intact(tmp_path_factory, tmp_path, caplog):
    """Resuming from a named step folder never silently falls back to another one."""
    out = tmp_path / "run"
    killed = fi.run(fi.train_args("tokenizer", out), tmp_path / "logs", FAULT_KILL="step_end:2")
    assert killed.returncode == KILLED
    (out / "checkpoints" / "step_2" / "trainer_state.json").write_text("{}")
    with pytest.raises(ResumeError, match="step_2/trainer_state.json: size"):
        find_resume_checkpoint(out / "checkpoints" / "step_2")
    with caplog.at_level(logging.WARNING, logger="kronos_engine"):
        assert find_resume_checkpoint(out).name == "step_1"
    assert "step_2/trainer_state.json" in caplog.text
