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

Only a signal that can be traded as asked is: a model without one finite forecast, intraday
forecasts (the backtest trades the provider's daily calendar), and settings Qlib would take
and misreport (account <= 0, negative costs, more instruments than the signal has) are one
`BacktestError` line before Qlib starts. NaN/inf values of a partly forecast signal are
skipped and counted (`report.json`'s `signal`, and a warning).
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
    """`(instrument, datetime)` -> predicted horizon return of one model in `forecasts`. A
    value the model could not forecast stays NaN (`run_backtest` counts and skips it); a model
    without a single finite value, or a file without rows, is refused: there is nothing to
    trade, and a backtest of it would report a constant signal's ratios."""
    if not forecasts.is_file():
        raise BacktestError(
            f"{forecasts}: not found; run scripts/evaluate.py --exp_dir <exp_dir> first"
        )
    columns = ["model", "symbol", "origin", "horizon", "close_pred", "close_origin"]
    try:
        table = pd.read_parquet(forecasts, columns=columns)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise BacktestError(f"{forecasts}: unreadable forecasts ({exc})") from None
    if table.empty:
        raise BacktestError(
            f"{forecasts}: holds no forecasts (0 rows); run scripts/evaluate.py on a test "
            "split with at least one origin"
        )
    models = list(dict.fromkeys(table["model"]))
    if model is None:
        candidates = [m for m in models if m not in ("naive", "drift")]
        model = candidates[0] if candidates else models[0]
    if model not in models:
        raise BacktestError(f"--model: '{model}' is not in {forecasts}; it has {models}")
    rows = table[(table["model"] == model)]
    rows = rows[rows["horizon"] == rows["horizon"].max()]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (rows["close_pred"] / rows["close_origin"] - 1.0).to_numpy(np.float64)
    if not np.isfinite(score).any():
        raise BacktestError(
            f"{forecasts}: model '{model}' has no usable signal: all {len(score)} predicted "
            f"returns at horizon {rows['horizon'].max()} are NaN or infinite (close_pred / "
            "close_origin); nothing to trade"
        )
    signal = pd.Series(
        score,
        index=pd.MultiIndex.from_arrays(
            [rows["symbol"].astype(str).to_numpy(), pd.DatetimeIndex(rows["origin"])],
            names=["instrument", "datetime"],
        ),
        name="score",
    ).sort_index()
    return signal, model


def check_settings(
    topk: int,
    n_drop: int,
    hold: int,
    open_cost: float,
    close_cost: float,
    min_cost: float,
    limit_threshold: float | None,
    account: float,
) -> None:
    """Refuse the settings Qlib would take without a word and then misreport: a negative
    cost it clips to 0 (while report.json lists it), an account of 0 (a division by zero) or
    below (no trade, yet ratios), a limit that bars every trade, and `n_drop` 0, with which
    Qlib's TopkDropoutStrategy sells every holding each day (its `list[-0:]` is the whole
    list) instead of keeping the top k. Checked before any work."""
    for flag, value in (("topk", topk), ("n_drop", n_drop), ("hold", hold)):
        if value < 1:
            raise BacktestError(f"--{flag}: must be >= 1, got {value}")
    if n_drop > topk:
        raise BacktestError(f"--n_drop: {n_drop} exceeds --topk {topk}")
    costs = (("open_cost", open_cost), ("close_cost", close_cost), ("min_cost", min_cost))
    for flag, value in costs:
        if not (math.isfinite(value) and value >= 0):
            raise BacktestError(f"--{flag}: must be a finite number >= 0, got {value}")
    if limit_threshold is not None and not (math.isfinite(limit_threshold) and limit_threshold > 0):
        raise BacktestError(
            f"--limit_threshold: must be a finite number > 0 (e.g. 0.095), got {limit_threshold}"
        )
    if not (math.isfinite(account) and account > 0):
        raise BacktestError(f"--account: must be a finite amount of cash > 0, got {account}")


def usable_signal(
    signal: pd.Series, topk: int, n_drop: int, warn: bool = True
) -> tuple[pd.Series, dict[str, int]]:
    """`signal` without its NaN/inf values (Qlib would rank +inf first and NaN last), and how
    many values and dates had none (on a date without any value the portfolio holds, `warn`
    says so); refused when nothing is left, or when the instruments left cannot fill `topk`
    (+ `n_drop` to swap among)."""
    finite = np.isfinite(signal.to_numpy(np.float64))
    dates = signal.index.get_level_values("datetime")
    usable = signal[finite]
    coverage = {
        "values": int(len(signal)),
        "values_without_signal": int((~finite).sum()),
        "dates": int(dates.nunique()),
        "dates_without_signal": int(dates.nunique() - dates[finite].nunique()),
    }
    if usable.empty:
        raise BacktestError(
            f"the signal has no usable value: all {len(signal)} are NaN or infinite; "
            "nothing to trade"
        )
    if coverage["values_without_signal"] and warn:
        log.warning(
            "%d of %d signal values are NaN or infinite (skipped); %d of %d dates have no "
            "signal at all (the portfolio holds on them)",
            coverage["values_without_signal"], coverage["values"],
            coverage["dates_without_signal"], coverage["dates"],
        )  # fmt: skip
    n = usable.index.get_level_values("instrument").nunique()
    if topk > n:
        raise BacktestError(
            f"--topk: {topk} exceeds the {n} instruments with a signal; give --topk <= {n}"
        )
    if topk + n_drop > n:  # else there is nothing outside the top k to swap in
        raise BacktestError(
            f"--n_drop: {n_drop} with --topk {topk} needs {topk + n_drop} instruments to swap "
            f"among, the signal has {n}; give --topk + --n_drop <= {n}"
        )
    return usable, coverage


def check_daily(signal: pd.Series, provider: Path | str) -> None:
    """Refuse intraday forecasts before Qlib sees them: the backtest trades the provider's
    daily calendar, where bars at times of day do not exist (Qlib fails inside, or trades
    one day of them)."""
    stamps = pd.DatetimeIndex(signal.index.get_level_values("datetime").unique()).sort_values()
    timed = stamps[stamps != stamps.normalize()]
    if timed.empty:
        return
    steps = pd.Series(stamps).diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    step = steps.mode().iloc[0] if not steps.empty else None
    every = f" {_freq_name(step)} apart" if step is not None else ""
    raise BacktestError(
        f"the forecasts are intraday (origins at times of day, e.g. {timed[0]},{every}) but "
        f"the provider {provider} trades a daily calendar (calendars/day.txt); backtest "
        "forecasts of daily bars"
    )


def _freq_name(step: pd.Timedelta) -> str:
    try:
        return pd.tseries.frequencies.to_offset(step).freqstr
    except ValueError:
        return str(step)


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
    name: str | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Qlib's TopkDropoutStrategy over `signal` on `provider`; returns the report dict and
    Qlib's daily portfolio frame (return, bench, cost, turnover, ...). The settings, the
    signal's usable values (counted in `report["signal"]`) and its daily frequency are checked
    before Qlib starts. `name` says what `provider` is in messages (default `--provider
    '<provider>'`; a temporary folder of the run's bars is named by those bars)."""
    check_settings(topk, n_drop, hold, open_cost, close_cost, min_cost, limit_threshold, account)
    signal, coverage = usable_signal(signal, topk, n_drop)
    backtest, executor, risk_analysis, TopkDropoutStrategy = _import_qlib()
    from qlib.data import D

    from kronos_engine.data.sources_qlib import init_qlib

    if not (provider / "calendars" / "day.txt").is_file():
        raise BacktestError(
            f"--provider: '{provider}' has no calendars/day.txt; write one with "
            "kronos_engine.data.write_qlib_provider(frames, provider, 'day')"
        )
    name = name or f"--provider '{provider}'"
    check_daily(signal, name)
    init_qlib(provider.resolve(), region)
    instruments = sorted(set(signal.index.get_level_values("instrument")))
    missing = [s for s in instruments if not (provider / "features" / s.lower()).is_dir()]
    if missing:
        raise BacktestError(
            f"{name}: has no data for instrument(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} of the forecasts"
        )
    if benchmark == EQUAL_WEIGHT:
        bench: Any = instruments  # Qlib averages the daily returns of a list of codes
    else:
        if not (provider / "features" / benchmark.lower()).is_dir():
            raise BacktestError(
                f"--benchmark: '{benchmark}' is not an instrument of {name}; give one "
                f"that is, or '{EQUAL_WEIGHT}'"
            )
        bench = benchmark
    calendar = pd.DatetimeIndex(D.calendar(freq="day"))
    dates = pd.DatetimeIndex(signal.index.get_level_values("datetime").unique()).sort_values()
    later = calendar[calendar > dates[-1]]
    if later.empty:
        raise BacktestError(
            f"{name}: its calendar ends at {calendar[-1].date()}, no trading day after "
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
    if not (daily["turnover"] > 0).any():
        log.warning(
            "the portfolio never traded (turnover 0 on every day): is --account %s enough "
            "for one trade unit of the top-%d instruments?", account, topk,
        )  # fmt: skip
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
        "signal": coverage,
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


__all__ = [
    "BacktestError",
    "EQUAL_WEIGHT",
    "check_settings",
    "load_signal",
    "run_backtest",
    "write_outputs",
]
