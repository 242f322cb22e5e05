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

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.errors import BacktestError
from kronos_engine.extras import optional_pyplot
from kronos_engine.run.outputs_guard import write_output_dir

log = logging.getLogger("kronos_engine")

EQUAL_WEIGHT = "equal_weight"
REPORT_JSON, REPORT_CSV, PLOT_FILE = "report.json", "report.csv", "cumulative_return.png"
BACKTEST_FILES = (REPORT_JSON, REPORT_CSV, PLOT_FILE)  # what an output folder holds
COMMAND = "backtest"  # the command named by the folder's marker (`run.outputs_guard`)


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
    """report.json, report.csv and the cumulative-return plot, written into a staging folder
    that then replaces `output` by renames (`run.outputs_guard.write_output_dir`): a kill at any
    point leaves the earlier three files or the new three, never a mix."""

    def fill(staging: Path) -> None:
        daily.to_csv(staging / REPORT_CSV, index_label="datetime")
        _plot(staging / PLOT_FILE, daily, model)
        (staging / REPORT_JSON).write_text(
            json.dumps({"model": model, **report}, indent=1), encoding="utf-8"
        )

    write_output_dir(output, COMMAND, fill)


def _plot(path: Path, daily: pd.DataFrame, model: str) -> None:
    plt = optional_pyplot("plot")
    if plt is None:
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


__all__ = ["BacktestError", "EQUAL_WEIGHT", "load_signal", "run_backtest", "write_outputs"]
