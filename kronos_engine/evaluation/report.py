"""What `scripts/evaluate.py` writes to `<exp_dir>/eval/`.

* `metrics.json`: `{model: {metric: value}}` over all symbols;
* `significance.json`: every pair of models compared over origin dates
  (`evaluation.significance`) and the IC t-statistics;
* `metrics_by_symbol.csv`: the same metrics per (model, symbol);
* `forecasts.parquet`: one row per model, symbol, origin and horizon step, streamed batch by
  batch (`ForecastSink`), so it is never held in memory whole;
* `report.md`: the table with the best value of each metric in bold, and how it was made;
* plots (with matplotlib): forecasts vs actuals for a few symbols, error by horizon step, IC
  by date, cumulative IC, calibration; time axes are bar indices labelled at session starts.

Everything is written into a staging folder which then replaces the output folder by renames,
so a failed evaluation leaves an earlier `eval/` as it was.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.evaluation import significance as S
from kronos_engine.evaluation.scoring import METRIC_ORDER, MetricAccumulator
from kronos_engine.extras import import_pyplot, optional_pyplot

log = logging.getLogger("kronos_engine")

FORECASTS_FILE = "forecasts.parquet"
METRICS_FILE = "metrics.json"
SIGNIFICANCE_FILE = "significance.json"
BY_SYMBOL_FILE = "metrics_by_symbol.csv"
REPORT_FILE = "report.md"
PLOT_FILES = (
    "forecast_vs_actual.png", "error_by_horizon.png", "ic_by_date.png", "cumulative_ic.png",
    "calibration.png",
)  # fmt: skip
SHOWN_BARS = 480  # forecast_vs_actual's last target bars per symbol: months of 5-minute bars smear
# What an evaluation folder holds, its defining file first (how an earlier one is recognised).
EVALUATION_FILES = (
    METRICS_FILE, BY_SYMBOL_FILE, FORECASTS_FILE, REPORT_FILE, SIGNIFICANCE_FILE, *PLOT_FILES,
)  # fmt: skip
COMMAND = "evaluate"  # the command named by the folder's marker (`run.outputs_guard`)

LOWER_IS_BETTER = {"mae", "rmse", "mape", "mase", "crps"}
HIGHER_IS_BETTER = {"skill", "direction_accuracy", "ic", "icir", "rank_ic", "rank_icir"}
NOMINAL = {"coverage_80": 0.8, "coverage_90": 0.9}  # best = closest to nominal


class ForecastSink:
    """Appends each batch's rows to one Parquet file (row groups), keeping memory bounded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Any = None
        self.rows = 0

    def __call__(self, table: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, arrow.schema)
        self._writer.write_table(arrow.cast(self._writer.schema))
        self.rows += len(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _json_value(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def write_metrics(
    folder: Path, acc: MetricAccumulator, significance: dict | None = None
) -> dict[str, dict[str, float]]:
    """`metrics.json`, `metrics_by_symbol.csv` and (when given) `significance.json`; returns
    the overall metrics."""
    overall = acc.overall()
    payload: dict[str, Any] = {
        m: {k: _json_value(v) for k, v in vals.items()} for m, vals in overall.items()
    }
    (folder / METRICS_FILE).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    if significance is not None:
        text = json.dumps(_json_tree(significance), indent=1)
        (folder / SIGNIFICANCE_FILE).write_text(text, encoding="utf-8")
    table = acc.by_symbol()
    columns = ["model", "symbol"] + [c for c in METRIC_ORDER if c in table.columns]
    table[columns].to_csv(folder / BY_SYMBOL_FILE, index=False, float_format="%.6g")
    return overall


def best_models(overall: dict[str, dict[str, float]]) -> dict[str, set[str]]:
    """metric -> the model(s) with its best value (ties all win)."""
    best: dict[str, set[str]] = {}
    metrics = {k for vals in overall.values() for k in vals}
    for metric in metrics:
        values = {m: v[metric] for m, v in overall.items() if math.isfinite(v.get(metric, np.nan))}
        if not values or metric == "origins":
            continue
        if metric in LOWER_IS_BETTER:
            score = {m: v for m, v in values.items()}
        elif metric in HIGHER_IS_BETTER:
            score = {m: -v for m, v in values.items()}
        elif metric in NOMINAL:
            score = {m: abs(v - NOMINAL[metric]) for m, v in values.items()}
        else:
            continue
        top = min(score.values())
        best[metric] = {m for m, s in score.items() if s == top}
    return best


def markdown_table(overall: dict[str, dict[str, float]]) -> str:
    """Models as rows, metrics as columns, the best value of each metric in bold."""
    metrics = [k for k in METRIC_ORDER if any(k in v for v in overall.values())]
    best = best_models(overall)
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for model, values in overall.items():
        cells = []
        for metric in metrics:
            value = values.get(metric, np.nan)
            text = "-" if not math.isfinite(value) else _fmt(metric, value)
            if model in best.get(metric, ()):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(metric: str, value: float) -> str:
    if metric == "origins":
        return str(int(value))
    return f"{value:.4g}"


def write_report_md(
    folder: Path,
    overall: dict[str, dict[str, float]],
    info: dict[str, Any],
    significance: dict | None = None,
) -> None:
    """`report.md`: the verdict first (does the model beat naive?), then the table."""
    lines = ["# Forecast evaluation", ""]
    for key, value in info.items():
        lines.append(f"- {key}: {value}")
    lines += ["", markdown_table(overall), ""]
    naive = overall.get("naive", {}).get("mae")
    for model, values in overall.items():
        if model == "naive" or naive is None:
            continue
        verdict = "beats" if values["mae"] < naive else "does not beat"
        lines.append(
            f"- {model} {verdict} the naive last-close forecast on close MAE "
            f"({values['mae']:.4g} vs {naive:.4g}, skill {values['skill']:.3f})."
        )
    lines += [
        "",
        "Bold: best per metric (lowest error; highest skill, direction accuracy and IC; "
        "coverage closest to its nominal level). `skill` is 1 - MAE / MAE(naive) on the same "
        "origins; `mase` scales each error by the mean absolute one-step change of the close "
        "over that origin's lookback; IC/RankIC are the cross-sectional Pearson/Spearman "
        "correlations of the predicted horizon return per date, averaged (ICIR = mean/std).",
        "",
    ]
    if significance is not None:
        lines += significance_markdown(significance)
    (folder / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")


# ------------------------------------------------------------------ significance


def _json_tree(value: Any) -> Any:
    """`value` with tuples as lists and every non-finite float as null (valid JSON)."""
    if isinstance(value, dict):
        return {k: _json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(v) for v in value]
    if isinstance(value, float):
        return _json_value(value)
    return value


def significance_markdown(section: dict, metric: str = "mae") -> list[str]:
    """The report's significance part: one sentence per pair of models on `metric`, then the
    IC t-statistics."""
    lines = [
        "## Is the difference real?",
        "",
        f"Per origin date, {metric.upper()} averaged over the symbols and horizon steps; "
        f"{section['confidence']:.0%} intervals from a moving-block bootstrap over dates "
        f"({section['resamples']} resamples, seed {section['seed']}); DM: Diebold-Mariano test "
        f"with h - 1 = {max(section['horizon'] - 1, 0)} lags and the Harvey-Leybourne-Newbold "
        "correction. MSE, MASE and (when sampled) CRPS: `significance.json`.",
        "",
    ]
    lines += [_pair_sentence(p) for p in section["pairs"] if p["metric"] == metric]
    tests = section["ic"]
    if tests:
        lines += ["", "IC and RankIC against zero (Newey-West t, h - 1 lags):", ""]
        for model, r in tests.items():
            parts = [
                f"{label} {r[k]:.3g} (t = {r[k + '_t']:.2f}, {_p(r[k + '_p'])}, "
                f"{r[k + '_dates']} dates)"
                for k, label in (("ic", "IC"), ("rank_ic", "RankIC"))
                if k in r
            ]
            lines.append(f"- {model}: " + "; ".join(parts) + ".")
    return lines + [""]


def _pair_sentence(p: dict) -> str:
    """ "kronos beats naive: MAE lower by 0.8% (95% CI 0.2%..1.4%, DM p = 0.01, 120 dates).\""""
    a, b, name, n = p["model"], p["other"], p["metric"].upper(), p["n_dates"]
    lo, hi = p["ci"]
    if n and p["mean_diff"] == 0 and lo == hi == 0:
        return f"- {a} and {b} have the same {name} on every one of the {n} dates."
    if not math.isfinite(p["p_value"]) or not math.isfinite(p["rel_diff"]):
        return f"- {a} vs {b}: too few dates ({n}) to test the {name} difference."
    rel, (rlo, rhi) = p["rel_diff"], p["rel_ci"]
    lower = rel < 0
    size = f"{_pct(-rel if lower else rel)}"
    ci = f"{_pct(-rhi)}..{_pct(-rlo)}" if lower else f"{_pct(rlo)}..{_pct(rhi)}"
    how = (
        f"{name} {'lower' if lower else 'higher'} by {size} "
        f"(95% CI {ci}, DM {_p(p['p_value'])}, {n} dates)"
    )
    if p["p_value"] < 0.05 and not lo <= 0 <= hi:
        verdict = f"{a} beats {b}" if lower else f"{a} does not beat {b} ({b} is better)"
        return f"- {verdict}: {how}."
    return f"- {a} vs {b}: no significant difference at the 5% level; {a}'s {how}."


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%" if math.isfinite(fraction) else "?"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "p = -"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def write_plots(folder: Path, acc: MetricAccumulator, n_symbols: int = 4) -> list[str]:
    """Forecast vs actual (final horizon step) for a few symbols, error by horizon step, IC
    by date and cumulative IC (when the IC of a date is defined), calibration (with samples).

    Returns the files written; without matplotlib (the `plot` extra) it writes none and
    says so in one line.
    """
    plt = optional_pyplot("plots")
    if plt is None:
        return []
    written = [_forecast_vs_actual(plt, folder, acc, n_symbols)]
    written.append(_error_by_horizon(plt, folder, acc.models))
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


def _forecast_vs_actual(plt: Any, folder: Path, acc: MetricAccumulator, n_symbols: int) -> str:
    """The final horizon step's forecast of each model against the actual close, over the
    last `SHOWN_BARS` target bars of each of the first `n_symbols` symbols."""
    symbols = sorted({s for _, s in acc.sums})[:n_symbols]
    forecasts = pd.read_parquet(
        folder / FORECASTS_FILE,
        columns=["model", "symbol", "timestamp", "horizon", "close_pred", "close_true"],
        filters=[("symbol", "in", symbols)],
    )
    last = forecasts[forecasts.horizon == forecasts.horizon.max()]
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


def _error_by_horizon(plt: Any, folder: Path, models: list[str]) -> str:
    errors = horizon_errors(folder / FORECASTS_FILE)
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


def _save(fig, ax, path: Path) -> str:
    """Legend (on `ax`), layout, PNG, close; returns the file name."""
    plt = import_pyplot()

    if ax is not None:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_evaluation(
    store: Any,
    origins: Any,
    forecasters: dict[str, Any],
    opts: Any,
    output: Path,
    info: dict[str, Any],
    plots: bool = True,
    progress: bool = True,
    bootstrap_seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Run the rolling evaluation and write every file of `output` (atomically replaced, with
    the marker of an evaluation folder); `bootstrap_seed` seeds the significance intervals."""
    from kronos_engine.evaluation.rolling import run_rolling
    from kronos_engine.run.outputs_guard import write_output_dir

    result: dict[str, dict[str, float]] = {}

    def fill(staging: Path) -> None:
        sink = ForecastSink(staging / FORECASTS_FILE)
        try:
            acc = run_rolling(store, origins, forecasters, opts, sink, progress)
        finally:
            sink.close()
        section = S.section_of(acc, opts.pred_len, bootstrap_seed)
        result.update(write_metrics(staging, acc, section))
        write_report_md(staging, result, {**info, "forecast rows": sink.rows}, section)
        if plots:
            write_plots(staging, acc)

    write_output_dir(Path(output), COMMAND, fill)
    return result
