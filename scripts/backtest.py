"""Does the forecast trade? Qlib's top-k dropout backtest of scripts/evaluate.py's forecasts.

    python scripts/backtest.py --exp_dir outputs/demo --provider data/qlib_provider
        [--topk 50 --n_drop 5 --hold 1] [--benchmark SH000300] [--output outputs/demo/backtest]

Writes <output>/report.json, report.csv and cumulative_return.png. All logic lives in
`kronos_engine.cli.backtest` (the trading: `kronos_engine.evaluation.backtest`); see `--help`.
"""

from kronos_engine.cli.backtest import main

if __name__ == "__main__":
    raise SystemExit(main())
