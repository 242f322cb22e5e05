"""Property 4 under faults: a rank that fails alone brings the whole torchrun job down with its
error, in bounded time, instead of leaving the other ranks waiting in a collective.

Distributed equivalence itself (same losses, final weights and exact validation mean over
uneven shards as one process with the same global batch; only rank 0 writes files) is proved
by tests/test_engine_distributed.py and tests/test_cli_pipeline.py; SIGTERM under torchrun by
tests/test_faults_signals.py.
"""

from __future__ import annotations

import faultinject as fi
import pytest

from kronos_engine.run.checkpoints import verify_checkpoint

BOUND_S = 90  # the whole job, start-up included (a hang would sit in gloo for 10 minutes)

CASES = {
    # FAULT_FAIL_RANK -> the line the failing rank's error must produce
    "user_error_mid_training": ("1:2:data", "error: rank 1: injected failure on rank 1 at step 2"),
    "crash_mid_training": ("1:2", "RuntimeError: injected failure on rank 1 at step 2"),
    "crash_before_training": ("1:setup", "RuntimeError: injected failure on rank 1 in setup"),
    "crash_in_validation": (
        "1:val:3",
        "RuntimeError: injected failure on rank 1 in validation at step 3",
    ),
    "rank0_user_error": ("0:2:data", "error: injected failure on rank 0 at step 2"),
}
DEFAULT = {"user_error_mid_training"}


@pytest.mark.parametrize(
    "case",
    [c if c in DEFAULT else pytest.param(c, marks=pytest.mark.slow) for c in CASES],
)
def test_a_failing_rank_brings_the_job_down_with_its_error(tmp_path, case):
    fault, expected = CASES[case]
    out = tmp_path / "run"
    result = fi.run(
        fi.train_args("tokenizer", out),
        tmp_path / "logs",
        timeout=BOUND_S + 60,
        cmd=fi.torchrun(2),
        FAULT_FAIL_RANK=fault,
    )
    assert result.seconds < BOUND_S, f"took {result.seconds:.0f}s\n{result}"
    assert result.returncode != 0, result
    assert expected in result.stderr, result
    if case == "crash_before_training":
        assert not (out / "checkpoints").exists()
        return
    # The job stopped where the rank failed (after step 2's checkpoint, or in the validation
    # that precedes step 3's); what was checkpointed before is intact.
    summary = fi.summary(out)
    assert summary["status"] == "failed" and summary["world_size"] == 2
    assert fi.steps(out)[-1] == 2
    verify_checkpoint(out / "checkpoints" / "step_2")
