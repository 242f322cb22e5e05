"""The PNG plots of an evaluation folder (`evaluation.report`), with matplotlib (the `plot`
extra): forecast vs actual, error by horizon step, IC by origin date and cumulative IC,
calibration, and (`--scaling`) the metrics against the sample count. Time axes are bar indices labelled at session starts (`data.timeutil.bar_ticks`),
so nights, weekends and lunch breaks of intraday bars take no width.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.evaluation.scoring import MetricAccumulator
from kronos_engine.extras import import_pyplot, optional_pyplot

log = logging.getLogger("kronos_engine")

PLOT_FILES = (
    "forecast_vs_actual.png", "error_by_horizon.png", "ic_by_date.png", "cumulative_ic.png",
    "calibration.png",
)  # fmt: skip
SHOWN_BARS = 480  # forecast_vs_actual's last target bars per symbol: months of 5-minute bars smear


def write_plots(
    folder: Path, acc: MetricAccumulator, forecasts: Path, n_symbols: int = 4
) -> list[str]:
    """Forecast vs actual (final horizon step) for a few symbols, error by horizon step, IC
    by date and cumulative IC (when the IC of a date is defined), calibration (with samples).

    Returns the files written; without matplotlib (the `plot` extra) it writes none and
    says so in one line.
    """
    plt = optional_pyplot("plots")
    if plt is None:
        return []
    written = [_forecast_vs_actual(plt, folder, forecasts, acc, n_symbols)]
    written.append(_error_by_horizon(plt, folder, forecasts, acc.models))
    daily = {m: acc.daily_ic(m) for m in acc.models}
    if any(len(d) and d["rank_ic"].notna().any() for d in daily.values()):
        written += _ic_plots(plt, folder, daily)
    else:
        log.info(
            "no ic_by_date.png, cumulative_ic.png: the IC of an origin date needs 2 or more "
            "symbols forecast at that date"
        )
    calibration = acc.calibration_table()
    if len(calibration):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="ideal")
        for model, part in calibration.groupby("model", sort=False):
            ax.plot(part["quantile"], part["observed"], marker="o", label=model)
        ax.set_xlabel("forecast quantile")
        ax.set_ylabel("share of actuals below it")
        ax.set_title("Calibration of the close quantiles")
        written.append(_save(fig, ax, folder / "calibration.png"))
    return written


def _bar_axis(ax: Any, stamps: Any) -> None:
    """A bar-index x axis labelled at session starts (`data.timeutil.bar_ticks`): nights,
    weekends and lunch breaks take no width."""
    from kronos_engine.data.timeutil import bar_ticks

    major, labels, minor = bar_ticks(stamps)
    ax.set_xticks(major, labels)
    ax.set_xticks(minor, minor=True)


def _forecast_vs_actual(
    plt: Any, folder: Path, forecasts: Path, acc: MetricAccumulator, n_symbols: int
) -> str:
    """The final horizon step's forecast of each model against the actual close, over the
    last `SHOWN_BARS` target bars of each of the first `n_symbols` symbols."""
    symbols = sorted({s for _, s in acc.sums})[:n_symbols]
    table = pd.read_parquet(
        forecasts,
        columns=["model", "symbol", "timestamp", "horizon", "close_pred", "close_true"],
        filters=[("symbol", "in", symbols)],
    )
    last = table[table.horizon == table.horizon.max()]
    fig, axes = plt.subplots(len(symbols), 1, figsize=(11, 2.8 * len(symbols)), squeeze=False)
    for ax, symbol in zip(axes[:, 0], symbols):
        rows = last[last.symbol == symbol]
        stamps = pd.DatetimeIndex(rows.timestamp.drop_duplicates().sort_values())
        shown = stamps[-SHOWN_BARS:]
        rows = rows[rows.timestamp >= shown[0]]
        actual = rows.drop_duplicates("timestamp").sort_values("timestamp")
        x = shown.get_indexer(actual.timestamp)
        ax.plot(x, actual.close_true, color="black", lw=1.4, label="actual")
        for model, part in rows.groupby("model", sort=False):
            part = part.sort_values("timestamp")
            ax.plot(shown.get_indexer(part.timestamp), part.close_pred, lw=1, label=model)
        cut = f", the last {len(shown)} of {len(stamps)} target bars"
        cut = cut if len(shown) < len(stamps) else ""
        ax.set_title(f"{symbol}: close forecast {int(last.horizon.max())} steps ahead{cut}")
        _bar_axis(ax, shown)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, None, folder / "forecast_vs_actual.png")


def horizon_errors(path: Path) -> pd.Series:
    """Mean absolute close error per (model, horizon step) in % of the close at the origin
    (so symbols of every price level weigh alike), read one row group at a time."""
    import pyarrow.parquet as pq

    parts = []
    columns = ["model", "horizon", "close_pred", "close_true", "close_origin"]
    for batch in pq.ParquetFile(path).iter_batches(columns=columns):
        f = batch.to_pandas()
        f["err"] = (f.close_pred - f.close_true).abs() / f.close_origin.abs() * 100.0
        f = f[np.isfinite(f["err"])]  # a zero close at the origin has no relative error
        parts.append(f.groupby(["model", "horizon"], sort=False)["err"].agg(["sum", "count"]))
    total = pd.concat(parts).groupby(level=[0, 1], sort=False).sum()
    return total["sum"] / total["count"]


def _error_by_horizon(plt: Any, folder: Path, forecasts: Path, models: list[str]) -> str:
    errors = horizon_errors(forecasts)
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in models:
        if model in errors.index.get_level_values(0):
            part = errors.loc[model].sort_index()
            ax.plot(part.index, part.to_numpy(), marker="o", label=model)
    ax.set_xlabel("horizon step (bars after the origin)")
    ax.set_ylabel("mean |forecast - actual|, % of close")
    ax.set_title("Close error by horizon step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return _save(fig, ax, folder / "error_by_horizon.png")


def _no_ic(model: str, values: pd.Series) -> str:
    """A legend label that says why a model has no line (naive forecasts one return, 0, for
    every symbol, so its correlation with the actual returns is undefined)."""
    return model if values.notna().any() else f"{model} (no IC: same forecast return everywhere)"


def _ic_plots(plt: Any, folder: Path, daily: dict[str, pd.DataFrame]) -> list[str]:
    """RankIC by origin date, and IC and RankIC summed over the dates (cumulative IC: a steady
    rise is a steady signal), on a bar-index axis of the origin dates."""
    dates = pd.DatetimeIndex(sorted(set().union(*(d.index for d in daily.values()))))
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for model, d in daily.items():
        x, y = dates.get_indexer(d.index), d["rank_ic"]
        ax.plot(x, y, lw=1, marker=".", label=_no_ic(model, y))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title("RankIC of the predicted horizon return, by origin date")
    _bar_axis(ax, dates)
    written = [_save(fig, ax, folder / "ic_by_date.png")]
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for ax, column, name in zip(axes, ("ic", "rank_ic"), ("IC", "RankIC")):
        for model, d in daily.items():
            y = d[column].reindex(dates)
            total = y.fillna(0.0).cumsum() if y.notna().any() else y  # a missing date adds 0
            ax.plot(np.arange(len(dates)), total, lw=1.2, label=_no_ic(model, y))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"cumulative {name}")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_title(
        f"IC and RankIC of the predicted horizon return summed over {len(dates)} origin "
        "dates: a steady rise is a steady signal"
    )
    _bar_axis(axes[1], dates)
    axes[1].set_xlabel("origin date")
    written.append(_save(fig, None, folder / "cumulative_ic.png"))
    return written


def scaling_plot(folder: Path, summary: list[dict], name: str) -> str | None:
    """IC, RankIC and CRPS against the sample count, one line per model with the std over
    seeds as error bars (`evaluation.scaling`'s summary rows); None without matplotlib."""
    plt = optional_pyplot(name)
    if plt is None:
        return None
    panels = (("ic", "IC"), ("rank_ic", "RankIC"), ("crps", "CRPS (2+ paths)"))
    counts = sorted({row["sample_count"] for row in summary})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (metric, label) in zip(axes, panels):
        for model in dict.fromkeys(row["model"] for row in summary):
            rows = [r for r in summary if r["model"] == model and np.isfinite(r[f"{metric}_mean"])]
            x = [r["sample_count"] for r in rows]
            y = [r[f"{metric}_mean"] for r in rows]
            err = [r[f"{metric}_std"] if np.isfinite(r[f"{metric}_std"]) else 0.0 for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=model)
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.set_xlabel("sample paths per forecast")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over seeds (bars: std)")
    return _save(fig, axes[0], folder / name)


def _save(fig, ax, path: Path) -> str:
    """Legend (on `ax`), layout, PNG, close; returns the file name."""
    plt = import_pyplot()

    if ax is not None:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
