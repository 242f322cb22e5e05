"""Forecast the next bars of every symbol with a trained tokenizer and predictor.

    python scripts/predict.py --exp_dir outputs/demo [--data_path data/klines] [--pred_len 10]
        [--sample_count 20 --quantiles 0.1,0.5,0.9] [--output forecast.parquet] [--plot]

All logic lives in `kronos_engine.cli.predict`; see `--help`.
"""

from kronos_engine.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
