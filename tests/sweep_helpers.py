"""A tiny sweep config on the demo data for the sweep tests (a trial trains in seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "scripts" / "sweep.py"

TINY = {
    "train_type": "tokenizer",
    "data_source": "demo",
    "demo_symbols": 2,
    "demo_length": 120,
    "lookback_window": 8,
    "predict_window": 2,
    "train_samples_per_epoch": 16,
    "val_samples": 8,
    "batch_size": 8,
    "epochs": 2,
    "val_interval": 1,
    "model_preset": "tiny",
    "progress_bar": False,
    "log_interval": 1,
    "keep_last": 1,
    "seed": 7,
}


def sweep_config(
    tmp_path: Path, n_trials: int = 8, train: dict | None = None, **sweep: object
) -> Path:
    """A config file with a `sweep:` section over lr (wide enough that the low ones are
    pruned) and weight_decay; `sweep` keys replace the section's, `train` keys the run's."""
    section = {
        "n_trials": n_trials,
        "seed": 0,
        "pruner": {"type": "median", "n_startup_trials": 2},
        "space": {
            "lr": {"log_uniform": [1.0e-6, 1.0e-2]},
            "weight_decay": {"uniform": [0.0, 0.1]},
        },
        **sweep,
    }
    path = tmp_path / "sweep.yaml"
    values = {**TINY, **(train or {}), "exp_dir": str(tmp_path / "exp"), "sweep": section}
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_sweep(config: Path, *flags: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SWEEP), f"--config={config}", *flags],
        capture_output=True, text=True, timeout=timeout, env=env(), check=False,
    )  # fmt: skip


def study_trials(exp: Path):
    """The study's trials, read through optuna from the sweep's journal."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(
        JournalFileBackend(str(exp / "sweep" / "study.journal"))
    )
    return optuna.load_study(study_name="kronos-sweep", storage=storage).get_trials()
