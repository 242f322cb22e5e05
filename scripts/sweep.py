"""Search hyperparameters with Optuna over the `sweep:` section of a config.

    python scripts/sweep.py --config configs/sweep_demo.yaml [--workers N] [--nprocs N]
    python scripts/sweep.py --config FILE.yaml --storage postgresql://host/db --study_name NAME

Each trial is a run folder `<exp_dir>/sweep/trial_<n>/`; the report is
`<exp_dir>/sweep/report.md`. All logic lives in `kronos_engine.cli.sweep`; see `--help`.
"""

from kronos_engine.cli.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
