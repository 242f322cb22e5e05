"""What a trial's run folder says about the trial: its objective value, pruned, or why it
failed; read from the `summary.json` the run wrote (the same file `scripts/train.py` users
read), and the last `error:` line of its log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna

from kronos_engine.errors import TrialFailed
from kronos_engine.layout import RunLayout
from kronos_engine.sweep.pruning import PRUNED


def trial_result(out: Path, code: int, number: int, objective: str) -> float:
    """The trial's objective (its best validation value), or `optuna.TrialPruned`, or
    `TrialFailed` naming the exit code and the run's error line."""
    summary = _summary(out)
    if code != 0 or summary is None:
        line = _error_line(out.parent / "logs" / f"trial_{number}.log")
        raise TrialFailed(
            f"trial {number}: the run exited with {code}" + (f": {line}" if line else "")
        )
    if summary.get("stop_reason") == PRUNED:
        raise optuna.TrialPruned(f"trial {number}: pruned at step {summary.get('global_step')}")
    value = summary.get("best_metric")
    if value is None or not math.isfinite(value):
        raise TrialFailed(f"trial {number}: the run never gave a finite {objective}")
    return float(value)


def _summary(out: Path) -> dict | None:
    try:
        return json.loads(RunLayout(out).summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _error_line(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else ""
