"""Loss, loss parts and learning rate of finished (or running) runs, read from `metrics.jsonl`.

Only the JSONL file is needed, so a run can be plotted while it trains, on another machine, or
years later. matplotlib is an optional extra (`pip install 'kronos-engine[plot]'`); without it
the command says so in one line instead of failing on import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kronos_engine.errors import PlotError
from kronos_engine.extras import import_pyplot
from kronos_engine.layout import RunLayout
from kronos_engine.run.outputs_guard import check_output_file

# Train record keys that are bookkeeping, not losses (see params.md, "metrics.jsonl").
TRAIN_NON_LOSS = {"type", "step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "samples"}
VAL_NON_LOSS = {"type", "step", "epoch", "best", "val_samples"}
KNOWN_VAL_METRICS = ("val_loss", "val_recon_mse")


@dataclass
class RunMetrics:
    """One run's series, each a list of (step, value) sorted by step."""

    label: str
    metric_name: str | None
    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    val: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def train_parts(self) -> list[str]:
        return [k for k in self.train if k not in TRAIN_NON_LOSS]

    @property
    def val_parts(self) -> list[str]:
        return [k for k in self.val if k not in VAL_NON_LOSS and k != self.metric_name]


def _metric_name(output_dir: Path, val_keys: set[str]) -> str | None:
    """The strategy's validation metric: from summary.json, else the known names."""
    summary = RunLayout(output_dir).summary
    if summary.is_file():
        try:
            name = json.loads(summary.read_text(encoding="utf-8")).get("metric_name")
        except (json.JSONDecodeError, AttributeError):
            name = None
        if name:
            return name
    found = [k for k in KNOWN_VAL_METRICS if k in val_keys]
    if found:
        return found[0]
    candidates = sorted(k for k in val_keys if k not in VAL_NON_LOSS)
    return candidates[0] if candidates else None


def load_run(output_dir: str | Path, label: str | None = None) -> RunMetrics:
    """Parse `<output_dir>/metrics.jsonl`; a line cut by a crash is skipped."""
    output_dir = Path(output_dir)
    if not output_dir.exists():
        raise PlotError(f"{output_dir}: does not exist")
    path = RunLayout(output_dir).metrics if output_dir.is_dir() else output_dir
    if not path.is_file():
        raise PlotError(f"{path}: no metrics file (is '{output_dir}' a run's output dir?)")
    train: dict[str, dict[int, float]] = {}
    val: dict[str, dict[int, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        target = val if record.get("type") == "val" else train
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                target.setdefault(key, {})[int(record["step"])] = float(value)
    if not train and not val:
        raise PlotError(f"{path}: holds no metric records yet")
    run_dir = path.parent
    return RunMetrics(
        label=label or str(output_dir),
        metric_name=_metric_name(run_dir, set(val)),
        train={k: sorted(v.items()) for k, v in train.items() if k != "step"},
        val={k: sorted(v.items()) for k, v in val.items() if k != "step"},
    )


def _dots(steps: Sequence[int]) -> str | None:
    """Markers on short series, so a run with one or two records still shows up."""
    return "." if len(steps) < 20 else None


def make_figure(runs: Sequence[RunMetrics]):
    """Three panels: loss (train solid, validation dashed), loss parts, learning rate."""
    plt = import_pyplot()
    fig, (ax_loss, ax_parts, ax_lr) = plt.subplots(1, 3, figsize=(17, 4.8))
    styles = ["-", "--", ":", "-."]
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        if "loss" in run.train:
            steps, values = zip(*run.train["loss"])
            ax_loss.plot(
                steps, values, color=color, marker=_dots(steps), label=f"{prefix}train loss"
            )
        if run.metric_name and run.metric_name in run.val:
            steps, values = zip(*run.val[run.metric_name])
            ax_loss.plot(
                steps, values, color=color, ls="--", marker="o", label=f"{prefix}{run.metric_name}"
            )
        parts = [("train", k) for k in run.train_parts] + [("val", k) for k in run.val_parts]
        for j, (kind, key) in enumerate(parts):
            series = run.train[key] if kind == "train" else run.val[key]
            steps, values = zip(*series)
            marker = "o" if kind == "val" else _dots(steps)
            ax_parts.plot(
                steps,
                values,
                color=color,
                ls=styles[j % len(styles)],
                marker=marker,
                label=f"{prefix}{key}",
            )
        if "lr" in run.train:
            steps, values = zip(*run.train["lr"])
            ax_lr.plot(steps, values, color=color, marker=_dots(steps), label=f"{prefix}lr")
    for ax, title in ((ax_loss, "loss"), (ax_parts, "loss parts"), (ax_lr, "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(", ".join(run.label for run in runs))
    fig.tight_layout()
    return fig


def plot_runs(output_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the PNG and return its path (default `<dir>/loss.png`, or `runs.png` for several).
    `out` is refused first (`PlotError`) when it is a folder, a run's own file or a file read."""
    if out is None:
        out = Path(output_dirs[0]) / "loss.png" if len(output_dirs) == 1 else Path("runs.png")
    out = Path(out)
    read = [RunLayout(d).metrics if Path(d).is_dir() else Path(d) for d in output_dirs]
    check_output_file(out, flag="--output", command="plot", error=PlotError, inputs=read)
    runs = [load_run(d) for d in output_dirs]
    fig = make_figure(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    import_pyplot().close(fig)
    return out


def plot_forecast(
    history: Any, forecast: Any, out: str | Path, quantiles: Sequence[float] = ()
) -> Path:
    """One symbol's close: history, forecast mean and the outer quantile band (PNG).

    `history` has `timestamps` and `close` columns; `forecast` is indexed by timestamp with
    `close` and, for each quantile q, `close_q<percent>`.
    """
    from kronos_engine.forecasting import quantile_column

    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(history["timestamps"], history["close"], color="tab:blue", label="history")
    ax.plot(forecast.index, forecast["close"], color="tab:orange", label="forecast (mean)")
    if len(quantiles) >= 2:
        low, high = min(quantiles), max(quantiles)
        ax.fill_between(
            forecast.index,
            forecast[quantile_column("close", low)],
            forecast[quantile_column("close", high)],
            color="tab:orange",
            alpha=0.25,
            label=f"{format(low * 100, 'g')}-{format(high * 100, 'g')}% band",
        )
    ax.set_ylabel("close")
    ax.legend(loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
