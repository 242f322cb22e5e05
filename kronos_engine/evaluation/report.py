"""What `scripts/evaluate.py` writes to `<exp_dir>/eval/`.

* `metrics.json`: `{model: {metric: value}}` over all symbols;
* `significance.json`: every pair of models compared over origin dates
  (`evaluation.significance`) and the IC t-statistics;
* `metrics_by_symbol.csv`: the same metrics per (model, symbol);
* `forecasts.parquet`: one row per model, symbol, origin and horizon step, streamed batch by
  batch (`ForecastSink`), so it is never held in memory whole;
* `report.md`: the table with the best value of each metric in bold, and how it was made;
* plots (with matplotlib, `evaluation.plots`): forecasts vs actuals for a few symbols, error
  by horizon step, IC by date, cumulative IC, calibration;
* with `--volatility`, `volatility.json` (`evaluation.volatility`); with `--scaling`,
  `scaling.json` and `scaling.png` (`evaluation.scaling`), each also a part of `report.md`.

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
from kronos_engine.evaluation import volatility as V
from kronos_engine.evaluation.plots import PLOT_FILES, scaling_plot, write_plots
from kronos_engine.evaluation.scaling import (
    SCALING_FILE,
    SCALING_PLOT,
    ScalingPlan,
    run_scaling,
    sampled_models,
    scaling_markdown,
)
from kronos_engine.evaluation.scoring import METRIC_ORDER, MetricAccumulator

log = logging.getLogger("kronos_engine")

FORECASTS_FILE = "forecasts.parquet"
METRICS_FILE = "metrics.json"
SIGNIFICANCE_FILE = "significance.json"
BY_SYMBOL_FILE = "metrics_by_symbol.csv"
REPORT_FILE = "report.md"
# What an evaluation folder holds, its defining file first (how an earlier one is recognised).
EVALUATION_FILES = (
    METRICS_FILE, BY_SYMBOL_FILE, FORECASTS_FILE, REPORT_FILE, SIGNIFICANCE_FILE, *PLOT_FILES,
    V.VOLATILITY_FILE, SCALING_FILE, SCALING_PLOT,
)  # fmt: skip
COMMAND = "evaluate"  # the command named by the folder's marker (`run.outputs_guard`)

LOWER_IS_BETTER = {"mae", "rmse", "mape", "mase", "crps"}
HIGHER_IS_BETTER = {"skill", "direction_accuracy", "ic", "icir", "rank_ic", "rank_icir"}
NOMINAL = {"coverage_80": 0.8, "coverage_90": 0.9}  # best = closest to nominal


class ForecastSink:
    """Appends each batch's rows to one Parquet file in row groups of `ROW_GROUP_ROWS` rows
    (the last one shorter), keeping memory bounded. The groups do not follow the batches, so
    the file's bytes do not depend on `--batch_size` (the rows' order does not either: see
    `rolling.run_rolling`)."""

    ROW_GROUP_ROWS = 65_536

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Any = None
        self._pending: list[Any] = []  # arrow tables not yet written, fewer rows than a group
        self._pending_rows = 0
        self.rows = 0

    def __call__(self, table: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, arrow.schema)
        self._pending.append(arrow.cast(self._writer.schema))
        self._pending_rows += len(table)
        self.rows += len(table)
        while self._pending_rows >= self.ROW_GROUP_ROWS:
            self._write(self.ROW_GROUP_ROWS)

    def _write(self, rows: int) -> None:
        import pyarrow as pa

        pending = pa.concat_tables(self._pending)
        self._writer.write_table(pending.slice(0, rows), row_group_size=rows)
        rest = pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        if self._writer is not None:
            if self._pending_rows:
                self._write(self._pending_rows)
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
        _write_json(folder / SIGNIFICANCE_FILE, significance)
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
    extra: list[str] | None = None,
) -> None:
    """`report.md`: the verdict first (does the model beat naive?), then the table; `extra`:
    lines of further parts (volatility, test-time scaling) at the end."""
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
    lines += extra or []
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


def _write_json(path: Path, tree: Any) -> None:
    path.write_text(json.dumps(_json_tree(tree), indent=1), encoding="utf-8")


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
    scaling: ScalingPlan | None = None,
    shard: Any = None,
) -> dict[str, dict[str, float]]:
    """Run the rolling evaluation and write every file of `output` (atomically replaced, with
    the marker of an evaluation folder); `bootstrap_seed` seeds the significance intervals.
    With `opts.volatility` the volatility part, with `scaling` the test-time scaling part
    (each sampled model, i.e. not a deterministic baseline). `shard` (`forecasting.shards.Shard`,
    rank 0's): the other ranks forecast their batches through `run_rolling` with theirs, and
    only this one writes."""
    from kronos_engine.evaluation.rolling import run_rolling
    from kronos_engine.run.outputs_guard import write_output_dir

    result: dict[str, dict[str, float]] = {}
    sampled = sampled_models(forecasters)

    def fill(staging: Path) -> None:
        sink = ForecastSink(staging / FORECASTS_FILE)
        try:
            acc = run_rolling(store, origins, forecasters, opts, sink, progress, shard)
        finally:
            sink.close()
        section = S.section_of(acc, opts.pred_len, bootstrap_seed)
        result.update(write_metrics(staging, acc, section))
        extra: list[str] = []
        if opts.volatility:
            vol = V.volatility_section(acc, list(sampled))
            _write_json(staging / V.VOLATILITY_FILE, vol)
            extra += V.volatility_markdown(vol)
        if scaling is not None:
            scaled = run_scaling(store, origins, sampled, opts, scaling, progress, shard)
            _write_json(staging / SCALING_FILE, scaled)
            extra += scaling_markdown(scaled)
            if plots:
                scaling_plot(staging, scaled["summary"], SCALING_PLOT)
        write_report_md(staging, result, {**info, "forecast rows": sink.rows}, section, extra)
        if plots:
            write_plots(staging, acc, staging / FORECASTS_FILE)

    write_output_dir(Path(output), COMMAND, fill)
    return result
