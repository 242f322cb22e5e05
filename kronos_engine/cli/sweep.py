"""`scripts/sweep.py`: a hyperparameter search on Optuna over the config's `sweep:` section.

    python scripts/sweep.py --config configs/sweep_demo.yaml [--workers N] [--nprocs N]
        [--storage URL] [--study_name NAME] [--key=value ...]

Everything else on the command line is a `scripts/train.py` flag over the config file, the base
every trial starts from. The section and every value the search space can produce are checked
before anything is written (one `error:` line, exit 2). Each trial is then an ordinary run
folder `<exp_dir>/sweep/trial_<n>/`, trained by `scripts/train.py`'s own entry in a child process
(`trial_main`, with the pruning callback); the study lives in `<exp_dir>/sweep/study.journal`
unless `--storage` names another, which workers on other machines can join. When the study
holds `n_trials` finished trials the report is written (`kronos_engine.sweep.report`).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kronos_engine.cli import train
from kronos_engine.cli.launch import pop_nprocs, positive_int
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.errors import TrainingError, UsageError
from kronos_engine.extras import import_optuna

log = logging.getLogger("kronos_engine")

DEFAULT_STUDY = "kronos-sweep"
JOURNAL_FILE = "study.journal"
# flag -> its help; `--nprocs` (each trial's processes) is the launcher's flag
FLAGS = {
    "workers": "trials run at once on this machine, each in its own process (default 1)",
    "storage": "the study's storage: a journal file path, or sqlite:///..., postgresql://... "
    "(default <exp_dir>/sweep/study.journal); workers elsewhere join it with the same value",
    "study_name": f"the study's name in the storage (default {DEFAULT_STUDY})",
}
USAGE = """usage: scripts/sweep.py --config FILE.yaml [--workers N] [--nprocs N] [--storage URL]
                         [--study_name NAME] [--key=value ...]

Search the config's sweep: section with Optuna; every other flag is a scripts/train.py flag
(python scripts/train.py --help) that applies to every trial.
"""


def pop_flags(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The sweep's own flags (`--name=value` / `--name value`) out of argv."""
    found: dict[str, str] = {}
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        name, eq, value = args[i].removeprefix("--").partition("=")
        if args[i].startswith("--") and name in FLAGS:
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise UsageError(f"--{name}: expected a value ({FLAGS[name]})")
                value, i = args[i + 1], i + 1
            if not value:
                raise UsageError(f"--{name}: expected a value ({FLAGS[name]})")
            found[name] = value
        else:
            rest.append(args[i])
        i += 1
    return found, rest


def _workers(value: str | None) -> int:
    return positive_int("--workers", value) if value is not None else 1


def run_sweep(
    argv: Sequence[str],
    workers: int = 1,
    nprocs: int | None = None,
    storage: str | None = None,
    study_name: str = DEFAULT_STUDY,
) -> tuple[Path, Path]:
    """Check everything, then run the study to `n_trials` and write the report. Returns the
    sweep folder and the best trial's run folder (a `TrainingError` when none completed)."""
    from optuna.trial import TrialState

    from kronos_engine.sweep.engine import check_storage, open_study
    from kronos_engine.sweep.report import write_report
    from kronos_engine.sweep.runner import Sweep
    from kronos_engine.sweep.space import check_space, default_metric, sweep_dir, trial_dir
    from kronos_engine.sweep.spec import parse_sweep

    layers, base = train.load_values(argv)
    folder = sweep_dir(base)
    spec = parse_sweep(layers.sweep, base, default_metric(base), layers.sweep_where)
    check_space(spec, base, folder)
    storage = storage or str(folder / JOURNAL_FILE)
    check_storage(storage)
    folder.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, storage, study_name)  # another sweep's study: refused here
    sweep = Sweep(spec, storage, study_name, folder, argv, nprocs)
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda sig, frame: sweep.stop(sig)) for sig in signals}
    try:
        sweep.run(study, workers)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_report(study, spec, folder)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise TrainingError(
            f"sweep: no trial completed (see {folder / 'report.md'} and the trials' logs in "
            f"{folder / 'logs'})"
        )
    return folder, trial_dir(folder, study.best_trial.number)


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/sweep.py`: check, search, report. Returns the process exit code."""
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(USAGE + "".join(f"  --{k}: {v}\n" for k, v in FLAGS.items()), end="")
        return 0
    try:
        import_optuna()  # one line naming the extra when it is missing
        from kronos_engine.sweep.report import BEST_LINK

        flags, rest = pop_flags(argv)
        nprocs, rest = pop_nprocs(rest)
        workers = _workers(flags.get("workers"))
        folder, best = run_sweep(
            rest,
            workers=workers,
            nprocs=nprocs,
            storage=flags.get("storage"),
            study_name=flags.get("study_name", DEFAULT_STUDY),
        )
        print(f"sweep: report {folder / 'report.md'}, trials {folder / 'trials.csv'}", flush=True)
        print(f"best trial: {best} (linked as {folder / BEST_LINK})", flush=True)
        print(
            f"re-train it: python scripts/train.py --config {best / 'config.yaml'} "
            "--output_dir=<new folder>",
            flush=True,
        )
        return 0
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)


def trial_main(argv: Sequence[str] | None = None) -> int:
    """One trial's training process (`python -m kronos_engine.cli.worker sweep_trial ARGS`):
    `scripts/train.py` with the pruning callback of the trial named in the environment; under
    `--nprocs` every rank runs this entry again through the launcher."""
    from kronos_engine.sweep.pruning import PruningCallback, TrialRef

    ref = TrialRef.from_env()
    callbacks = [PruningCallback(ref)] if ref is not None else []
    return train.main(argv, callbacks=callbacks, command="sweep_trial")
