"""Did fine-tuning help? Score a run's predictor, baselines and other models on held-out data.

    python scripts/evaluate.py --exp_dir outputs/demo [--split val] [--stride 5]
        [--compare pretrained=models/Kronos-small] [--sample_count 20] [--output eval/]

Writes <exp_dir>/eval/ (metrics.json, metrics_by_symbol.csv, forecasts.parquet, report.md,
plots). All logic lives in `kronos_engine.cli.evaluate`; see `--help`.
"""

from kronos_engine.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
