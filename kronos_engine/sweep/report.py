"""The sweep's report: `trials.csv` (every trial: number, state, objective, wall time, its
parameters, its run folder and the trial it re-runs), `report.md` (the counts, the best trial,
its `config.yaml` and the command that re-trains it, the table) and Optuna's optimisation
history and parameter importances as PNGs (its matplotlib backend). `best_trial` links to the
best trial's run folder, a stable path for `evaluate.py --exp_dir`. Every file is written to a
temporary name and renamed."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kronos_engine.extras import import_pyplot
from kronos_engine.fsio import atomic_save, atomic_write_text, move_into_place
from kronos_engine.layout import RunLayout
from kronos_engine.sweep.engine import retried_number
from kronos_engine.sweep.space import trial_dir
from kronos_engine.sweep.spec import SweepSpec

log = logging.getLogger("kronos_engine")

BEST_LINK = "best_trial"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"


def write_report(study: optuna.Study, spec: SweepSpec, folder: Path) -> Path:
    """Write the report files into `folder` (`<exp_dir>/sweep`); returns `report.md`."""
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t, spec, folder) for t in trials]
    atomic_write_text(folder / "trials.csv", _csv(rows, spec))
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if finished else None
    if best is not None:
        _link_best(folder, trial_dir(folder, best.number))
    plots = _plots(study, folder, len(finished))
    text = _markdown(study, spec, folder, rows, best, plots)
    atomic_write_text(folder / "report.md", text)
    return folder / "report.md"


def _row(t: optuna.trial.FrozenTrial, spec: SweepSpec, folder: Path) -> dict[str, object]:
    wall = None
    if t.datetime_start and t.datetime_complete:
        wall = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
    retried = retried_number(t)
    row: dict[str, object] = {
        "number": t.number,
        "state": t.state.name,
        spec.objective: t.value if t.value is not None else "",
        "last_step": max(t.intermediate_values) if t.intermediate_values else "",
        "wall_s": wall if wall is not None else "",
        "retry_of": retried if retried is not None else "",
        "run_dir": str(trial_dir(folder, t.number)),
    }
    for p in spec.space:
        row[p.key] = t.params.get(p.key, "")
    return row


def _csv(rows: list[dict[str, object]], spec: SweepSpec) -> str:
    fields = ["number", "state", spec.objective, "last_step", "wall_s", "retry_of"]
    fields += [p.key for p in spec.space] + ["run_dir"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _link_best(folder: Path, target: Path) -> None:
    """`<sweep>/best_trial` -> `trial_<n>`, replaced atomically; a `best_trial` the sweep did
    not make (not a link) is left alone."""
    link = folder / BEST_LINK
    if link.exists() and not link.is_symlink():
        log.warning("sweep: %s is not a link the sweep made; left as it is", link)
        return
    tmp = folder / f".{BEST_LINK}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(target.name, tmp)
    move_into_place(tmp, link)


def _plots(study: optuna.Study, folder: Path, complete: int) -> dict[str, str]:
    """name -> file written, or why not (a sentence for the report)."""
    from optuna.visualization import matplotlib as ovm

    plt = import_pyplot()  # the Agg backend, before optuna's plots pick one
    out: dict[str, str] = {}
    if complete < 1:
        out["history"] = "no optimisation history: no trial completed"
    else:
        _save(plt, ovm.plot_optimization_history(study), folder / HISTORY_PNG)
        out["history"] = HISTORY_PNG
    if complete < 2:
        out["importances"] = (
            f"no parameter importances: they need at least 2 complete trials, the study has "
            f"{complete}"
        )
        return out
    try:
        axes = ovm.plot_param_importances(study)
    except (ValueError, RuntimeError) as exc:  # e.g. every complete trial has the same values
        out["importances"] = f"no parameter importances: {' '.join(str(exc).split())}"
        return out
    _save(plt, axes, folder / IMPORTANCE_PNG)
    out["importances"] = IMPORTANCE_PNG
    return out


def _save(plt, axes, path: Path) -> None:
    fig = axes.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _markdown(study, spec: SweepSpec, folder: Path, rows, best, plots: dict[str, str]) -> str:
    states = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState}
    counts = ", ".join(f"{n} {name.lower()}" for name, n in states.items() if n)
    goal = "lower" if spec.direction == "minimize" else "higher"
    lines = [
        f"# Sweep `{study.study_name}`",
        "",
        f"Objective: `{spec.objective}` ({goal} is better), {spec.n_trials} trials asked; "
        f"pruner {spec.pruner}, sampler {spec.sampler} (seed {spec.seed}).",
        f"Trials: {counts or 'none'}.",
        "",
    ]
    if best is None:
        lines += ["No trial completed yet, so there is no best trial.", ""]
    else:
        run = trial_dir(folder, best.number)
        config = RunLayout(run).config
        lines += [
            "## Best trial",
            "",
            f"Trial {best.number}: `{spec.objective}` = {best.value:.6g}, run folder `{run}` "
            f"(also `{folder / BEST_LINK}`), its model `{RunLayout(run).best}`.",
            "",
            "Parameters: " + ", ".join(f"`{k}` = {v!r}" for k, v in best.params.items()),
            "",
            f"Its config, ready to re-train: `{config}`",
            "",
            "```bash",
            f"python scripts/train.py --config {config} --output_dir=<new folder>",
            "```",
            "",
        ]
    lines += ["## Trials", "", "| " + " | ".join(_columns(spec)) + " |"]
    lines.append("|" + "---|" * len(_columns(spec)))
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in _columns(spec)) + " |")
    lines += ["", "## Plots", ""]
    for name, what in plots.items():
        lines.append(
            f"![{name}]({what})" if what.endswith(".png") else f"{what[0].upper()}{what[1:]}."
        )
        lines.append("")
    lines.append(f"All trials: `{folder / 'trials.csv'}`.")
    return "\n".join(lines) + "\n"


def _columns(spec: SweepSpec) -> list[str]:
    return ["number", "state", spec.objective, "wall_s", "retry_of", *[p.key for p in spec.space]]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")
