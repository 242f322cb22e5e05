"""`scripts/backtest.py`: does the forecast trade? A top-k dropout portfolio on Qlib.

The signal is each instrument's predicted return over the horizon, `close_pred / close_origin
- 1` at the last horizon step, dated at the origin (the last bar the model saw), read from
`<exp_dir>/eval/forecasts.parquet`. Qlib's own `TopkDropoutStrategy`, `SimulatorExecutor`,
`backtest` and `risk_analysis` do the rest, as the public `finetune/qlib_test.py` does: a
signal dated `t` is traded on the next trading day, so no forecast trades on data it saw
after the fact.

The benchmark is an instrument of the provider (`--benchmark SH000300`) or, with
`--benchmark equal_weight` (the default), the equal-weight daily return of the signal's
instruments. Outputs: `<output>/report.json`, `report.csv` (Qlib's daily portfolio report)
and `cumulative_return.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("kronos_engine")

EQUAL_WEIGHT = "equal_weight"


class BacktestError(ValueError):
    """A bad argument or input of the backtest; one line, exit code 2."""


def _import_qlib() -> Any:
    try:
        import qlib  # noqa: F401
        from qlib.backtest import backtest, executor
        from qlib.contrib.evaluate import risk_analysis
        from qlib.contrib.strategy import TopkDropoutStrategy
    except ImportError as exc:
        raise BacktestError(
            f"the backtest needs pyqlib ({exc}); install it with pip install -e '.[qlib]'"
        ) from None
    return backtest, executor, risk_analysis, TopkDropoutStrategy


def load_signal(forecasts: Path, model: str | None) -> tuple[pd.Series, str]:
    """`(instrument, datetime)` -> predicted horizon return of one model in `forecasts`."""
    if not forecasts.is_file():
        raise BacktestError(
            f"{forecasts}: not found; run scripts/evaluate.py --exp_dir <exp_dir> first"
        )
    columns = ["model", "symbol", "origin", "horizon", "close_pred", "close_origin"]
    try:
        table = pd.read_parquet(forecasts, columns=columns)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise BacktestError(f"{forecasts}: unreadable forecasts ({exc})") from None
    models = list(dict.fromkeys(table["model"]))
    if model is None:
        candidates = [m for m in models if m not in ("naive", "drift")]
        model = candidates[0] if candidates else models[0]
    if model not in models:
        raise BacktestError(f"--model: '{model}' is not in {forecasts}; it has {models}")
    rows = table[(table["model"] == model)]
    rows = rows[rows["horizon"] == rows["horizon"].max()]
    signal = pd.Series(
        (rows["close_pred"] / rows["close_origin"] - 1.0).to_numpy(np.float64),
        index=pd.MultiIndex.from_arrays(
            [rows["symbol"].astype(str).to_numpy(), pd.DatetimeIndex(rows["origin"])],
            names=["instrument", "datetime"],
        ),
        name="score",
    ).sort_index()
    return signal, model


def run_backtest(
    signal: pd.Series,
    provider: Path,
    region: str = "cn",
    topk: int = 50,
    n_drop: int = 5,
    hold: int = 1,
    benchmark: str = EQUAL_WEIGHT,
    open_cost: float = 0.0005,
    close_cost: float = 0.0015,
    min_cost: float = 5.0,
    limit_threshold: float | None = None,
    deal_price: str = "close",
    account: float = 100_000_000,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Qlib's TopkDropoutStrategy over `signal` on `provider`; returns the report dict and
    Qlib's daily portfolio frame (return, bench, cost, turnover, ...)."""
    backtest, executor, risk_analysis, TopkDropoutStrategy = _import_qlib()
    from qlib.data import D

    from kronos_engine.data.sources_qlib import init_qlib

    if not (provider / "calendars" / "day.txt").is_file():
        raise BacktestError(
            f"--provider: '{provider}' has no calendars/day.txt; write one with "
            "kronos_engine.data.write_qlib_provider(frames, provider, 'day')"
        )
    init_qlib(provider.resolve(), region)
    instruments = sorted(set(signal.index.get_level_values("instrument")))
    missing = [s for s in instruments if not (provider / "features" / s.lower()).is_dir()]
    if missing:
        raise BacktestError(
            f"--provider: '{provider}' has no data for instrument(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} of the forecasts"
        )
    if benchmark == EQUAL_WEIGHT:
        bench: Any = instruments  # Qlib averages the daily returns of a list of codes
    else:
        if not (provider / "features" / benchmark.lower()).is_dir():
            raise BacktestError(
                f"--benchmark: '{benchmark}' is not an instrument of '{provider}'; give one "
                f"that is, or '{EQUAL_WEIGHT}'"
            )
        bench = benchmark
    calendar = pd.DatetimeIndex(D.calendar(freq="day"))
    dates = pd.DatetimeIndex(signal.index.get_level_values("datetime").unique()).sort_values()
    later = calendar[calendar > dates[-1]]
    if later.empty:
        raise BacktestError(
            f"--provider: its calendar ends at {calendar[-1].date()}, no trading day after "
            f"the last signal date {dates[-1].date()}"
        )
    start, end = dates[0], later[0]
    strategy = TopkDropoutStrategy(signal=signal, topk=topk, n_drop=n_drop, hold_thresh=hold)
    sim = executor.SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True)
    exchange = {
        "freq": "day",
        "limit_threshold": limit_threshold,
        "deal_price": deal_price,
        "open_cost": open_cost,
        "close_cost": close_cost,
        "min_cost": min_cost,
        "codes": instruments,
    }
    with warnings.catch_warnings():  # qlib's nanmean over days a code has no bar
        warnings.simplefilter("ignore", RuntimeWarning)
        portfolio, _ = backtest(
            start_time=start,
            end_time=end,
            strategy=strategy,
            executor=sim,
            benchmark=bench,
            account=account,
            exchange_kwargs=exchange,
        )
    daily, _ = portfolio["1day"]
    excess = daily["return"] - daily["bench"]
    without_cost = _risk(risk_analysis(excess, freq="day"))
    with_cost = _risk(risk_analysis(excess - daily["cost"], freq="day"))
    report = {
        "excess_return_without_cost": without_cost,
        "excess_return_with_cost": with_cost,
        "information_ratio": with_cost["information_ratio"],
        "max_drawdown": with_cost["max_drawdown"],
        "turnover": float(daily["turnover"].mean()),
        "benchmark_return": _risk(risk_analysis(daily["bench"], freq="day")),
        "portfolio_return_with_cost": _risk(
            risk_analysis(daily["return"] - daily["cost"], freq="day")
        ),
        "settings": {
            "topk": topk,
            "n_drop": n_drop,
            "hold": hold,
            "benchmark": benchmark,
            "open_cost": open_cost,
            "close_cost": close_cost,
            "min_cost": min_cost,
            "limit_threshold": limit_threshold,
            "deal_price": deal_price,
            "account": account,
            "start": str(start.date()),
            "end": str(end.date()),
            "instruments": len(instruments),
            "signal_dates": len(dates),
        },
    }
    return report, daily


def _risk(frame: pd.DataFrame) -> dict[str, float | None]:
    """Qlib's risk_analysis frame (index: mean, std, annualized_return, information_ratio,
    max_drawdown) as a JSON-ready dict."""
    values = frame["risk"] if "risk" in frame.columns else frame.iloc[:, 0]
    return {str(k): (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}


def write_outputs(output: Path, report: dict[str, Any], daily: pd.DataFrame, model: str) -> None:
    """report.json, report.csv and the cumulative-return plot; report.json is written last
    and by rename, so a reader never sees a half-written one."""
    import os

    output.mkdir(parents=True, exist_ok=True)
    daily.to_csv(output / "report.csv", index_label="datetime")
    _plot(output / "cumulative_return.png", daily, model)
    tmp = output / ".report.json.tmp"
    tmp.write_text(json.dumps({"model": model, **report}, indent=1), encoding="utf-8")
    os.replace(tmp, output / "report.json")


def _plot(path: Path, daily: pd.DataFrame, model: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no plot: matplotlib is not installed (pip install -e '.[plot]')")
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(daily.index, (daily["return"] - daily["cost"]).cumsum(), label=f"{model} (with cost)")
    ax.plot(daily.index, daily["bench"].cumsum(), color="black", ls="--", label="benchmark")
    excess = (daily["return"] - daily["bench"] - daily["cost"]).cumsum()
    ax.plot(daily.index, excess, label="excess (with cost)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("Cumulative return, top-k dropout on the forecast signal")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/backtest.py",
        description="Backtest the forecasts of scripts/evaluate.py with Qlib's top-k dropout.",
    )
    p.add_argument("--exp_dir", required=True, help="experiment dir evaluated by evaluate.py")
    p.add_argument("--forecasts", help="forecasts file (default <exp_dir>/eval/forecasts.parquet)")
    p.add_argument(
        "--model", help="model in the forecasts to trade (default: the first non-baseline)"
    )
    p.add_argument("--provider", help="Qlib provider folder (default: the run's qlib data_path)")
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
    reader of a finished run."""
    from kronos_engine.forecasting.runs import find_run_config

    return find_run_config(exp_dir, "predictor")


def main(argv: Sequence[str] | None = None) -> int:
    from kronos_engine.cli import exit_code_for, setup_logging

    setup_logging()
    try:
        args = build_parser().parse_args(argv)
        for flag in ("topk", "n_drop", "hold"):
            if getattr(args, flag) < (0 if flag == "n_drop" else 1):
                raise BacktestError(f"--{flag}: must be positive, got {getattr(args, flag)}")
        if args.n_drop > args.topk:
            raise BacktestError(f"--n_drop: {args.n_drop} exceeds --topk {args.topk}")
        exp_dir = Path(args.exp_dir)
        config = _run_config(exp_dir)
        provider = args.provider
        if provider is None and config.get("data_source") == "qlib":
            provider = config.get("data_path")
        if provider is None:
            raise BacktestError(
                "--provider: required (the run did not read a Qlib provider); write one from "
                "your CSVs with kronos_engine.data.write_qlib_provider"
            )
        region = args.region or config.get("qlib_region", "cn")
        forecasts = (
            Path(args.forecasts) if args.forecasts else exp_dir / "eval" / "forecasts.parquet"
        )
        signal, model = load_signal(forecasts, args.model)
        report, daily = run_backtest(
            signal,
            Path(provider),
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
        )
        output = Path(args.output) if args.output else exp_dir / "backtest"
        write_outputs(output, report, daily, model)
        shown = {k: report[k] for k in ("information_ratio", "max_drawdown", "turnover")}
        annual = report["excess_return_with_cost"].get("annualized_return")
        print(f"{model}: excess annualized return with cost {annual}, {shown} -> {output}")
        return 0
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)


__all__ = ["BacktestError", "load_signal", "main", "run_backtest", "write_outputs"]
