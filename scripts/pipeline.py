"""Data preparation -> tokenizer -> predictor for one experiment, on the same engine.

    python scripts/pipeline.py [--config FILE.yaml] [--skip-tokenizer] [--skip-predictor] ...
    python scripts/pipeline.py --nprocs=N ...   # N local DDP processes, or under torchrun

Writes `<exp_dir>/tokenizer`, `<exp_dir>/predictor` and caches the data in `<exp_dir>/cache`.
"""

from kronos_engine.cli.pipeline import pipeline_main

if __name__ == "__main__":
    raise SystemExit(pipeline_main())
