"""A sweep killed with SIGKILL (its whole process group: the sweep, its workers and the trial
processes) while a trial trains, then started again with the same command, ends with exactly
`n_trials` finished trials, each finished once; the trials that were running are failed and
re-queued with their parameters (Optuna's retry record names them), never finished twice."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from optuna.trial import TrialState
from sweep_helpers import SWEEP, env, run_sweep, study_trials, sweep_config


def _a_trial_has_a_record(folder) -> bool:
    for metrics in folder.glob("trial_*/metrics.jsonl"):
        if metrics.read_text().strip():
            return True
    return False


def test_a_sigkilled_sweep_restarted_finishes_every_trial_once(tmp_path):
    n_trials = 2  # both workers killed mid-trial; the restart re-runs both at once
    config = sweep_config(tmp_path, n_trials=n_trials)
    folder = tmp_path / "exp" / "sweep"
    proc = subprocess.Popen(
        [sys.executable, str(SWEEP), f"--config={config}", "--workers=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not _a_trial_has_a_record(folder):
        assert proc.poll() is None, "the sweep ended before a trial wrote a record"
        assert time.time() < deadline, "no trial wrote a metrics.jsonl record"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    running = {t.number for t in study_trials(tmp_path / "exp") if t.state == TrialState.RUNNING}
    assert running, "the kill found no running trial"

    again = run_sweep(config, "--workers=2")
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_trials(tmp_path / "exp")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials, [(t.number, t.state) for t in trials]
    for number in running:  # failed, and re-run once by a retry that finished
        assert trials[number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0] in finished, number
        assert retries[0].params == trials[number].params
    origins = [t.system_attrs.get("failed_trial", t.number) for t in finished]
    assert len(set(origins)) == len(origins)  # no trial finished twice
    for t in finished:  # each finished trial's run folder finished once, from step 0
        summary = json.loads((folder / f"trial_{t.number}" / "summary.json").read_text())
        assert summary["status"] == "completed"
        lines = (folder / f"trial_{t.number}" / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line).get("step") for line in lines]
        assert steps == sorted(steps)
    assert not list((folder / ".owners").iterdir())  # the restarted sweep gave its lock back
    report = (folder / "trials.csv").read_text()
    assert "FAIL" in report


def test_a_sigterm_stops_every_trial_with_a_checkpoint_and_leaves_them_to_re_queue(tmp_path):
    """SIGTERM to the sweep process alone: it passes the signal to its trial processes, which
    checkpoint and exit, and ends with 143; the study still names the trials RUNNING, so the
    next start re-queues them (the path the SIGKILL test follows). The trial is long (the
    signal stops it): the tiny one's last steps could end before the signal reached it."""
    config = sweep_config(tmp_path, n_trials=3, train={"epochs": 500})
    folder = tmp_path / "exp" / "sweep"
    proc = subprocess.Popen(
        [sys.executable, str(SWEEP), f"--config={config}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not _a_trial_has_a_record(folder):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    trials = study_trials(tmp_path / "exp")
    assert [t.state for t in trials] == [TrialState.RUNNING]
    run = folder / "trial_0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_reason"] == "signal"
    assert list((run / "checkpoints").glob("step_*"))
    lock = run / ".lock"  # the trial process is gone: it gave its run lock back
    if lock.exists():
        with open(lock, "r+") as fh:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _spec(n_trials: int):
    from kronos_engine.sweep.spec import parse_sweep

    section = {"n_trials": n_trials, "space": {"lr": {"log_uniform": [1e-6, 1e-2]}}}
    return parse_sweep(section, {"seed": 0}, "val_loss")


def test_dead_owners_trials_are_failed_and_re_queued_and_the_count_skips_them(tmp_path):
    """In one process, fast: a RUNNING trial whose owner's lock is free (its process died) is
    failed and re-queued with its values; the count leaves out re-queued and surplus trials."""
    import optuna

    from kronos_engine.sweep.engine import open_study
    from kronos_engine.sweep.runner import OWNERS_DIR, Sweep, counted, counts

    spec = _spec(n_trials=3)
    storage = str(tmp_path / "study.journal")
    study = open_study(spec, storage, "s")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)}
    (tmp_path / OWNERS_DIR).mkdir()
    (tmp_path / OWNERS_DIR / "gone.lock").write_text("")  # nobody holds it: its owner is dead
    for state, attrs in [
        (TrialState.COMPLETE, {}),
        (TrialState.FAIL, {}),  # failed in its own right: counts
        (TrialState.FAIL, {"surplus": True}),  # asked past the count: does not
    ]:
        trial = optuna.create_trial(
            state=state, params={"lr": 1e-3}, distributions=dist, user_attrs=attrs,
            value=1.0 if state == TrialState.COMPLETE else None,
        )  # fmt: skip
        study.add_trial(trial)
    running = study.ask({"lr": dist["lr"]})
    running.set_user_attr("owner", "gone.lock")
    lr = running.params["lr"]
    assert counts(study) == (2, 1)

    Sweep(spec, storage, "s", tmp_path, []).reap(study)
    trials = study.get_trials()
    assert trials[3].state == TrialState.FAIL and not counted(trials[3], trials)  # re-queued
    assert trials[4].state == TrialState.WAITING and trials[4].params == {"lr": lr}
    assert trials[4].system_attrs["failed_trial"] == 3
    assert counts(study) == (2, 0)
    assert not (tmp_path / OWNERS_DIR / "gone.lock").exists()
