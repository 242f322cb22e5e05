"""Property 3: SIGTERM or SIGINT makes the trainer finish the current step, write a resumable
checkpoint, flush its metrics and exit non-zero within a bounded time, in one process and under
torchrun; resuming then ends exactly as an uninterrupted run.

The runs are slowed down (FAULT_SLEEP per micro-batch) so that the signal lands mid-run; the
resumed part runs at full speed. DataLoader workers are on (num_workers=2) throughout.
"""

from __future__ import annotations

import json
import os
import signal
import time

import faultinject as fi
import pytest

from kronos_engine import run as run_dir
from kronos_engine.run.checkpoints import find_resume_checkpoint, verify_checkpoint

BOUND_S = 30  # from the signal to the process exit (the tiny run needs ~1 s)
BOUND_TORCHRUN_S = 60


def _signal_run(tmp_path, args, sig, to_group=False, cmd=None, records=3):
    out = tmp_path / "run"
    proc = fi.start(args, tmp_path / "logs", cmd=cmd, new_session=to_group, FAULT_SLEEP="0.25")
    fi.wait_for_records(proc, out, records)
    sent = time.monotonic()
    if to_group:
        os.killpg(proc.pid, sig)  # what a shell's Ctrl-C or `kill -- -PGID` does
    else:
        proc.send_signal(sig)
    result = fi.finish(proc, timeout=120)
    return out, result, time.monotonic() - sent


def _check_stopped(out, result, elapsed, bound, world_size=1):
    assert elapsed < bound, f"took {elapsed:.1f}s to stop"
    summary = fi.summary(out)
    assert summary["status"] == "stopped" and summary["stop_reason"] == "signal", summary
    assert summary["world_size"] == world_size
    step = summary["global_step"]
    assert 0 < step < fi.LAST_STEP
    # The step in flight was finished and checkpointed, and it is what resume picks.
    assert fi.steps(out)[-1] == step
    verify_checkpoint(out / "checkpoints" / f"step_{step}")
    assert find_resume_checkpoint(out).name == f"step_{step}"
    state = fi.trainer_state(out, step)
    assert state["world_size"] == world_size and len(state["rng"]) == world_size
    # Metrics were flushed up to that step, and no extra validation ran on the way out.
    records = fi.read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(1, step + 1))
    assert [r["step"] for r in records if r["type"] == "val"] == list(range(3, step + 1, 3))
    # No rank failed on its way out (torchrun itself prints a traceback for the signal it got).
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]:" not in result.stderr, result
    assert "DataLoader worker" not in result.stderr, result
    if world_size == 1:
        assert "Traceback" not in result.stderr, result
    return step


@pytest.mark.parametrize(
    "sig,to_group",
    [
        (signal.SIGTERM, False),  # a scheduler's preemption notice to the process
        (signal.SIGINT, True),  # Ctrl-C in a shell: the trainer and its DataLoader workers
        pytest.param(signal.SIGTERM, True, marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, False, marks=pytest.mark.slow),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_signal_stops_with_a_checkpoint_and_resumes_exactly(
    tmp_path_factory, tmp_path, sig, to_group
):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    args = fi.train_args("tokenizer", tmp_path / "run")
    out, result, elapsed = _signal_run(tmp_path, args, sig, to_group)
    assert result.returncode == 128 + sig, result
    step = _check_stopped(out, result, elapsed, BOUND_S)
    assert f"stopped by {sig.name} at step {step}" in result.stdout
    assert f"--resume={out}" in result.stdout

    resumed = fi.run(args + [f"--resume={out}"], tmp_path / "logs")
    assert resumed.returncode == 0, resumed
    assert f"resumed from {out / 'checkpoints' / f'step_{step}'}" in resumed.stderr
    fi.assert_same_run(out, reference)


@pytest.mark.slow
def test_second_sigint_aborts_at_once_and_the_last_checkpoint_is_intact(tmp_path):
    args = fi.train_args("tokenizer", tmp_path / "run")
    out = tmp_path / "run"
    proc = fi.start(args, tmp_path / "logs", FAULT_SLEEP="0.5")
    fi.wait_for_records(proc, out, 3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    result = fi.finish(proc, timeout=120)
    assert result.returncode == 128 + signal.SIGINT, result
    assert result.stderr.rstrip().splitlines()[-1] == "error: interrupted"
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    verify_checkpoint(find_resume_checkpoint(out))


def test_sigterm_to_torchrun_stops_every_rank_with_one_checkpoint(tmp_path):
    args = fi.train_args("tokenizer", tmp_path / "run")
    out, result, elapsed = _signal_run(tmp_path, args, signal.SIGTERM, cmd=fi.torchrun(2))
    assert result.returncode != 0, result
    # Both ranks stopped at the same step (the flag is max-reduced) and rank 0 wrote it all.
    _check_stopped(out, result, elapsed, BOUND_TORCHRUN_S, world_size=2)
    assert result.stdout.count("stopped by SIGTERM") == 1
    assert not run_dir.tmp_file_for(run_dir.RunLayout(out).metrics).exists()


@pytest.mark.slow
def test_sigterm_to_torchrun_then_resume_under_torchrun_is_exact(tmp_path_factory, tmp_path):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer", nproc=2)
    args = fi.train_args("tokenizer", tmp_path / "run")
    out, result, elapsed = _signal_run(tmp_path, args, signal.SIGTERM, cmd=fi.torchrun(2))
    assert result.returncode != 0, result
    step = _check_stopped(out, result, elapsed, BOUND_TORCHRUN_S, world_size=2)
    resumed = fi.run(args + [f"--resume={out}"], tmp_path / "logs", cmd=fi.torchrun(2))
    assert resumed.returncode == 0, resumed
    assert f"resumed from {out / 'checkpoints' / f'step_{step}'}" in resumed.stderr
    fi.assert_same_run(out, reference)
