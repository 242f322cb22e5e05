"""`scripts/backtest.py`: trade the forecasts of `scripts/evaluate.py` with Qlib's top-k dropout
strategy (`evaluation.backtest`) and write `<output>/report.json`, `report.csv` and
`cumulative_return.png`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.data import DataSpec
from kronos_engine.errors import BacktestError, ForecastError
from kronos_engine.evaluation.backtest import (
    BACKTEST_FILES,
    COMMAND,
    EQUAL_WEIGHT,
    check_settings,
    load_signal,
    run_backtest,
    usable_signal,
    write_outputs,
)
from kronos_engine.evaluation.run_bars import (
    check_daily_run,
    describe,
    run_bars_provider,
    run_data_spec,
)
from kronos_engine.run.finished import find_run_config
from kronos_engine.run.outputs_guard import check_output_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/backtest.py",
        description="Backtest the forecasts of scripts/evaluate.py with Qlib's top-k dropout.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--exp_dir", required=True, help="experiment dir evaluated by evaluate.py")
    p.add_argument("--forecasts", help="forecasts file (default <exp_dir>/eval/forecasts.parquet)")
    p.add_argument(
        "--model", help="model in the forecasts to trade (default: the first non-baseline)"
    )
    p.add_argument(
        "--provider",
        help="Qlib provider folder (default: the run's qlib data_path; for a run of demo, "
        "CSV/Parquet or market data, its own bars written as a temporary provider)",
    )
    p.add_argument("--region", help="Qlib region (default: the run's qlib_region, else cn)")
    p.add_argument("--topk", type=int, default=50, help="instruments held")
    p.add_argument("--n_drop", type=int, default=5, help="instruments replaced per day")
    p.add_argument("--hold", type=int, default=1, help="minimum holding days (hold_thresh)")
    p.add_argument("--open_cost", type=float, default=0.0005, help="buy cost rate")
    p.add_argument("--close_cost", type=float, default=0.0015, help="sell cost rate")
    p.add_argument("--min_cost", type=float, default=5.0, help="minimum cost per trade")
    p.add_argument("--limit_threshold", type=float, help="daily price limit, e.g. 0.095 (CN)")
    p.add_argument("--deal_price", choices=("close", "open"), default="close")
    p.add_argument("--account", type=float, default=100_000_000, help="initial cash")
    p.add_argument(
        "--benchmark",
        default=EQUAL_WEIGHT,
        help=f"an instrument of the provider, or '{EQUAL_WEIGHT}' of the signal's instruments",
    )
    p.add_argument("--output", help="output folder (default <exp_dir>/backtest)")
    return p


def _run_config(exp_dir: Path) -> dict:
    """The evaluated run's config.yaml (its predictor stage's, else its own), read by the one
    reader of a finished run (values typed: a hand-edited `data_path: [1, 2]` is one line)."""
    try:
        return find_run_config(exp_dir, "predictor")
    except ForecastError as exc:
        raise BacktestError(f"{exc}; or give --provider and --region") from None


def _data_path(spec: DataSpec) -> str | None:
    """The folder or file the run's bars come from (none for the demo data)."""
    return spec.data_path if spec.data_source != "demo" else None


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    try:
        args = build_parser().parse_args(argv)
        check_settings(
            args.topk,
            args.n_drop,
            args.hold,
            args.open_cost,
            args.close_cost,
            args.min_cost,
            args.limit_threshold,
            args.account,
        )
        exp_dir = Path(args.exp_dir)
        needs_config = args.provider is None or args.region is None
        config = _run_config(exp_dir) if needs_config else {}
        provider, spec = args.provider, None
        if provider is None:
            if not config:  # without it the bars would be the default demo data, not the run's
                raise BacktestError(
                    f"--exp_dir: '{exp_dir}' has no config.yaml (nor predictor/config.yaml) "
                    "telling which bars the run read; give --provider (a Qlib provider folder)"
                )
            spec = run_data_spec(config)
            if spec.data_source == "qlib":
                provider = spec.data_path
            else:  # the run's own bars, written as a temporary provider below
                check_daily_run(spec.freq, spec)
        region = args.region or config.get("qlib_region") or "cn"
        forecasts = (
            Path(args.forecasts) if args.forecasts else exp_dir / "eval" / "forecasts.parquet"
        )
        output = Path(args.output) if args.output else exp_dir / "backtest"
        check_output_dir(
            output,
            flag="--output",
            command=COMMAND,
            error=BacktestError,
            inputs=[forecasts, provider if spec is None else _data_path(spec)],
            own_names=BACKTEST_FILES,
        )
        signal, model = load_signal(forecasts, args.model)
        if provider is None:  # the signal's checks before the run's bars are read and written
            usable_signal(signal, args.topk, args.n_drop, warn=False)
        bars = nullcontext(Path(provider)) if provider is not None else run_bars_provider(spec)
        with bars as folder:
            report, daily = run_backtest(
                signal,
                folder,
                region,
                args.topk,
                args.n_drop,
                args.hold,
                args.benchmark,
                args.open_cost,
                args.close_cost,
                args.min_cost,
                args.limit_threshold,
                args.deal_price,
                args.account,
                name=None if provider is not None else describe(spec),
            )
        write_outputs(output, report, daily, model)
        shown = {k: report[k] for k in ("information_ratio", "max_drawdown", "turnover")}
        annual = report["excess_return_with_cost"].get("annualized_return")
        print(f"{model}: excess annualized return with cost {annual}, {shown} -> {output}")
        return 0
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)
