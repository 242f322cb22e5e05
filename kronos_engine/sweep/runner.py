"""The sweep's workers: each takes the next trial from the study and trains it in a child
process, until the study holds `n_trials` finished trials (complete + pruned + failed ones
that were not re-queued).

Why a child process per trial: a trial is then exactly a `scripts/train.py` run of its
`config.yaml` (fresh interpreter, seeds, torch state, `--nprocs` through the same launcher), so
re-training the best trial's config reproduces it, and a crashing trial cannot take its worker
down. `--workers N` is N threads of one process, each waiting on its own child: Optuna's own
`n_jobs` model, with the training off the GIL in the children.

Dead trials. A SIGKILL leaves the trial that was running RUNNING in the storage. RDB storage
has Optuna's heartbeat (`engine.open_storage`); for a journal file each worker process holds a
POSIX record lock on `<sweep>/.owners/<host>-<pid>-<id>.lock` for its lifetime and names that file
in its trials' `owner` attribute. The kernel drops the lock with the process, so a RUNNING
trial whose owner's lock can be taken is dead: it is failed and re-queued with Optuna's
`RetryHeartbeatStaleTrialCallback`, before any new trial is asked for. The count is kept exact
by asking under one lock per process, and a trial asked for concurrently by another process
past the count is told FAIL (`surplus`) before it trains.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kronos_engine.fsio import move_into_place
from kronos_engine.sweep.engine import (
    is_rdb,
    retried_number,
    retry_callback,
    suggest,
)
from kronos_engine.sweep.outcome import TrialFailed, trial_result
from kronos_engine.sweep.pruning import TRIAL_ENV, TrialRef
from kronos_engine.sweep.space import trial_dir
from kronos_engine.sweep.spec import SweepSpec

log = logging.getLogger("kronos_engine")

OWNERS_DIR = ".owners"
OWNER_ATTR = "owner"
SURPLUS_ATTR = "surplus"
OWNERLESS_STALE_S = 120  # a RUNNING trial that never got an owner (killed within ms of ask)
POLL_S = 1.0  # how often a worker with nothing to ask re-reads the study


class Sweep:
    """Run the trials of one study: `run(workers)` returns when it holds `n_trials` finished."""

    def __init__(
        self,
        spec: SweepSpec,
        storage: str,
        study_name: str,
        folder: Path,
        train_argv: Sequence[str],
        nprocs: int | None = None,
    ) -> None:
        self.spec, self.storage, self.study_name, self.folder = spec, storage, study_name, folder
        self.train_argv, self.nprocs = list(train_argv), nprocs
        self._ask = threading.Lock()
        self._children: set[subprocess.Popen] = set()
        self._children_lock = threading.Lock()
        self._stopping = False
        self._owner = self._take_owner_lock()
        self.errors: list[BaseException] = []

    def _take_owner_lock(self) -> str:
        """Lock a new file, then give it its name: a file under its final name is locked from
        the start, so a free one always means a dead owner (`reap` removes those)."""
        owners = self.folder / OWNERS_DIR
        owners.mkdir(parents=True, exist_ok=True)
        # unique even when a restarted sweep gets a dead one's pid (containers reuse them)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
        tmp = owners / f".{name}.tmp"
        self._owner_fh = open(tmp, "w")  # noqa: SIM115 - held for the process's life
        fcntl.lockf(self._owner_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        move_into_place(tmp, owners / name)
        self._owner_path = owners / name
        return name

    def _release_owner_lock(self) -> None:
        """After every thread ended (none of this process's trials runs any more)."""
        self._owner_path.unlink(missing_ok=True)
        self._owner_fh.close()

    def run(self, study: optuna.Study, workers: int) -> None:
        """`workers` threads on one `Study` (`engine.open_study`; as Optuna's `n_jobs`: one
        sampler, so no two threads draw the same values), each running one trial process at
        a time."""
        threads = [
            threading.Thread(target=self._work, args=(study,), daemon=True) for _ in range(workers)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            self._release_owner_lock()
        if self.errors:
            raise self.errors[0]

    def _work(self, study: optuna.Study) -> None:
        try:
            while self._next(study):
                pass
        except BaseException as exc:  # reported by `run` in the main thread
            self.errors.append(exc)

    def _next(self, study: optuna.Study) -> bool:
        """Run one trial; False once the study is full."""
        self._ask.acquire()
        held = [True]

        def objective(trial: optuna.Trial) -> float:
            self._ask.release()
            held[0] = False
            return self._objective(study, trial)

        try:
            self.reap(study)
            finished, running = counts(study)
            if finished >= self.spec.n_trials:
                return False
            if finished + running >= self.spec.n_trials:  # others run the last ones: wait,
                # they may die (then their re-queued copies are WAITING and asked next)
                self._ask.release()
                held[0] = False
                time.sleep(POLL_S)
                return True
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            return True
        finally:
            if held[0]:
                self._ask.release()

    def _objective(self, study: optuna.Study, trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, self._owner)
        trials = study.get_trials(deepcopy=False)
        ahead = [t for t in trials if t.number < trial.number]
        taken = [t for t in ahead if counted(t, trials) or t.state == TrialState.RUNNING]
        if len(taken) >= self.spec.n_trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise TrialFailed(f"trial {trial.number}: surplus, the study already has its trials")
        params = suggest(trial, self.spec)
        out = trial_dir(self.folder, trial.number)
        retried = retried_number(study._storage.get_trial(trial._trial_id))
        note = f" (re-run of trial {retried})" if retried is not None else ""
        log.info("sweep: trial %d%s: %s", trial.number, note, params)
        code = self._train(trial, params, out)
        return trial_result(out, code, trial.number, self.spec.objective)

    def _train(self, trial: optuna.Trial, params: dict, out: Path) -> int:
        """The trial's `scripts/train.py` run in a child process; its exit code."""
        flags = [f"--{key}={_flag(value)}" for key, value in params.items()]
        flags += [f"--output_dir={out}", f"--best_metric={self.spec.objective}"]
        if self.nprocs:
            flags.append(f"--nprocs={self.nprocs}")
        ref = TrialRef(
            self.storage, self.study_name, trial._trial_id, self.spec.objective,
            self.spec.pruner, self.spec.pruner_settings,
        )  # fmt: skip
        env = {**os.environ, TRIAL_ENV: ref.to_env()}
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "kronos_engine.cli.worker", "sweep_trial"]
        with open(logs / f"trial_{trial.number}.log", "ab") as fh, self._children_lock:
            if self._stopping:  # stop() is ending the process: start nothing more
                threading.Event().wait()
            proc = subprocess.Popen(
                [*command, *self.train_argv, *flags], env=env, stdout=fh, stderr=fh
            )
            self._children.add(proc)
        code = proc.wait()
        with self._children_lock:
            self._children.discard(proc)
            stopping = self._stopping
        if stopping:  # the trial stopped for stop(): the study must not hear of it
            threading.Event().wait()
        return code

    def stop(self, signum: int) -> None:
        """SIGTERM/SIGINT to the sweep: each trial process gets SIGTERM (unless a Ctrl-C already
        reached its process group: a second one would abort it), checkpoints and exits, and
        the sweep process ends at once with 128 + signal without telling the study: its
        trials stay RUNNING, and the next start finds them dead by their owner's lock and
        re-queues them, as after a SIGKILL."""
        with self._children_lock:
            self._stopping = True
            children = list(self._children)
        for proc in children:
            if signum == signal.SIGTERM:
                proc.send_signal(signal.SIGTERM)
        for proc in children:
            proc.wait()
        os._exit(128 + signum)

    def reap(self, study: optuna.Study) -> None:
        """Fail and re-queue the RUNNING trials whose worker is gone (see the module doc)."""
        if is_rdb(self.storage):
            optuna.storages.fail_stale_trials(study)
            return
        now = _dt.datetime.now()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get(OWNER_ATTR)
            if owner == self._owner:
                continue
            if owner is None:
                start = t.datetime_start or now
                dead = (now - start).total_seconds() > OWNERLESS_STALE_S
            else:
                dead = _lock_is_free(self.folder / OWNERS_DIR / owner)
            if dead and study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                log.warning("sweep: trial %d lost its worker; re-queued", t.number)
                failed = study._storage.get_trial(t._trial_id)
                retry_callback(self.spec.max_retry)(study, failed)
        for path in (self.folder / OWNERS_DIR).glob("*.lock"):  # owners reaped above
            if path.name != self._owner and _lock_is_free(path):
                path.unlink(missing_ok=True)


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials: what the trial count stands at. WAITING ones (re-queued)
    are not counted: `ask` takes them before it makes a new trial."""
    trials = study.get_trials(deepcopy=False)
    finished = sum(counted(t, trials) for t in trials)
    return finished, sum(t.state == TrialState.RUNNING for t in trials)


def counted(trial: optuna.trial.FrozenTrial, trials: Sequence[optuna.trial.FrozenTrial]) -> bool:
    """A trial that counts as finished: complete, pruned, or failed in its own right (not
    re-queued after its worker died, not a surplus one)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    if trial.state != TrialState.FAIL or trial.user_attrs.get(SURPLUS_ATTR):
        return False
    return not any(trial.number in t.system_attrs.get("retry_history", ()) for t in trials)


def _lock_is_free(path: Path) -> bool:
    """True when no process holds the record lock on `path` (its owner is dead). A missing
    file (another machine's folder) says nothing: the trial is left alone."""
    try:
        fh = open(path, "r+")  # noqa: SIM115 - never created here: missing says nothing
    except OSError:
        return False
    with fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.lockf(fh, fcntl.LOCK_UN)
        return True


def _flag(value: object) -> str:
    """A config value as a flag's text (lists comma-joined, as `coerce` reads them)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
