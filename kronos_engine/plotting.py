"""Loss, loss parts and learning rate of finished (or running) runs, read from `metrics.jsonl`;
and `predict --plot`'s forecast figure (close and volume on a bar-index axis, `forecast_figure`).

Only the JSONL file is needed, so a run can be plotted while it trains, on another machine, or
years later. matplotlib is an optional extra (`pip install 'kronos-engine[plot]'`); without it
the command says so in one line instead of failing on import. Bad lines of the file are
skipped and counted in one warning; the picture is written by tmp + rename, to a name with an
image extension matplotlib writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kronos_engine.errors import PlotError
from kronos_engine.extras import import_pyplot
from kronos_engine.fsio import atomic_save
from kronos_engine.layout import RunLayout
from kronos_engine.run.outputs_guard import check_output_file, safe_file_names, write_output_dir

log = logging.getLogger("kronos_engine")

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
    """The strategy's validation metric: from summary.json (when it is readable and names
    one), else the known names."""
    summary = RunLayout(output_dir).summary
    if summary.is_file():
        try:
            name = json.loads(summary.read_text(encoding="utf-8")).get("metric_name")
        except (OSError, ValueError, AttributeError):  # unreadable, not UTF-8/JSON, no mapping
            name = None
        if name and isinstance(name, str):
            return name
    found = [k for k in KNOWN_VAL_METRICS if k in val_keys]
    if found:
        return found[0]
    candidates = sorted(k for k in val_keys if k not in VAL_NON_LOSS)
    return candidates[0] if candidates else None


def _step(record: Any) -> int | None:
    """The record's optimizer step: a whole number >= 0 (`3` or `3.0`); None for anything
    else (`"x"`, null, NaN, Infinity, 1.5, true, a record that is no mapping or has none)."""
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        return None
    if isinstance(step, float) and not (math.isfinite(step) and step.is_integer()):
        return None
    return int(step) if step >= 0 else None


def _records(path: Path) -> tuple[list[tuple[int, dict]], list[int]]:
    """`(step, record)` of every usable line of a metrics file, and the 1-based numbers of the
    lines skipped: not UTF-8, not JSON (a line cut by a crash, or garbage), or without a
    whole-number step. Blank lines are no records."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlotError(f"{path}: unreadable ({exc.strerror or exc})") from None
    good: list[tuple[int, dict]] = []
    bad: list[int] = []
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError too
            bad.append(number)
            continue
        step = _step(record)
        if step is None:
            bad.append(number)
        else:
            good.append((step, record))
    return good, bad


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(map(str, numbers[:5]))
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{' ...' if len(numbers) > 5 else ''}"


def load_run(output_dir: str | Path, label: str | None = None) -> RunMetrics:
    """Parse `<output_dir>/metrics.jsonl`. Bad lines (not UTF-8 or JSON, a step that is not
    a whole number) are skipped and counted in one warning, as a log reader does, so a run
    cut by a crash or a file with a damaged line still plots; a file without one usable
    record is a `PlotError`."""
    output_dir = Path(output_dir)
    if not output_dir.exists():
        raise PlotError(f"{output_dir}: does not exist")
    path = RunLayout(output_dir).metrics if output_dir.is_dir() else output_dir
    if not path.is_file():
        raise PlotError(f"{path}: no metrics file (is '{output_dir}' a run's output dir?)")
    train: dict[str, dict[int, float]] = {}
    val: dict[str, dict[int, float]] = {}
    records, bad = _records(path)
    for step, record in records:
        target = val if record.get("type") == "val" else train
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                target.setdefault(key, {})[step] = float(value)
    if not train and not val:
        skipped = f" ({len(bad)} bad: {_lines(bad)})" if bad else ""
        raise PlotError(f"{path}: holds no metric records yet{skipped}")
    if bad:
        log.warning(
            "%s: skipped %d bad record(s) (%s): not UTF-8 or JSON, or without a whole-number "
            "step; plotting the other %d",
            path, len(bad), _lines(bad), len(records),
        )  # fmt: skip
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


def image_format(out: Path, flag: str = "--output") -> str:
    """The image format matplotlib writes for `out`'s extension; a `PlotError` naming the
    allowed ones for another (`.txt`) or none (matplotlib would add `.png` to the name)."""
    plt = import_pyplot()
    probe = plt.figure()  # its canvas knows the formats (matplotlib is imported in extras)
    formats = sorted(probe.canvas.get_supported_filetypes())
    plt.close(probe)
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        what = f"extension '{out.suffix}'" if out.suffix else "no extension"
        raise PlotError(
            f"{flag}: '{out}' has {what}, not an image format matplotlib writes; end it in "
            f"one of {', '.join('.' + f for f in formats)}"
        )
    return suffix


def _check_writable(out: Path, flag: str = "--output") -> None:
    """Refuse, before any drawing, an output this process cannot write: the file, or the
    nearest existing folder it goes into (missing folders below it are made), is read-only."""
    path = Path(os.path.abspath(out))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PlotError(
            f"{flag}: '{out}' cannot be written: the folder '{folder}' is not writable; give a "
            "path in a folder you can write"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise PlotError(f"{flag}: '{out}' cannot be written: the file is read-only")


def save_figure(fig: Any, out: Path, fmt: str, flag: str = "--output") -> None:
    """`fig` to `out` by tmp + rename (`fsio.atomic_save`): an earlier picture stays whole
    when the write fails. Missing folders are made; a failure (read-only, disk full, a folder
    that cannot be made) removes the folders it made and is one `PlotError` line."""
    made: list[Path] = []
    folder = Path(os.path.abspath(out)).parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(Path(out), lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))
    except OSError as exc:
        for created in made:  # innermost first
            with contextlib.suppress(OSError):
                created.rmdir()
        raise PlotError(f"{flag}: '{out}' cannot be written ({exc.strerror or exc})") from None


def plot_runs(output_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the picture and return its path (default `<dir>/loss.png`, or `runs.png` for
    several). `out` is refused first (`PlotError`) when it is a folder, a run's own file, a
    file read, not an image name matplotlib writes, or not writable."""
    if out is None:
        out = Path(output_dirs[0]) / "loss.png" if len(output_dirs) == 1 else Path("runs.png")
    out = Path(out)
    read = [RunLayout(d).metrics if Path(d).is_dir() else Path(d) for d in output_dirs]
    check_output_file(out, flag="--output", command="plot", error=PlotError, inputs=read)
    fmt = image_format(out)
    _check_writable(out)
    runs = [load_run(d) for d in output_dirs]
    fig = make_figure(runs)
    try:
        save_figure(fig, out, fmt)
    finally:
        import_pyplot().close(fig)
    return out


def bar_axis(axes: Sequence[Any], stamps: Any, max_labels: int = 10) -> None:
    """Label the bar-index x axis of the last of `axes` (`data.timeutil.bar_ticks`) and mark
    each session start on all with a faint line: a gap in wall-clock time reads as a break."""
    from kronos_engine.data.timeutil import bar_ticks

    major, labels, minor = bar_ticks(stamps, max_labels)
    axes[-1].set_xticks(major, labels)
    axes[-1].set_xticks(minor, minor=True)
    for ax in axes:
        for x in major + minor:
            ax.axvline(x - 0.5, color="grey", lw=0.5, alpha=0.3, zorder=0)


def forecast_figure(
    history: Any,
    forecast: Any,
    quantiles: Sequence[float] = (),
    actual: Any = None,
    title: str = "",
):
    """Close (history, forecast mean and its outer quantile band, the actual bars when known)
    above volume, on a bar-index axis labelled at session starts, titled with `title`, the
    origin and the horizon. `history` and `actual` have `timestamps`, `close` and `volume`
    columns; `forecast` is indexed by timestamp with `close`, `volume` and `close_q<percent>`."""
    import pandas as pd

    from kronos_engine.forecasting import quantile_column

    plt = import_pyplot()
    past = pd.DatetimeIndex(history["timestamps"])
    known = actual if actual is not None and len(actual) else None
    after = pd.DatetimeIndex(forecast.index)
    if known is not None:
        after = after.union(pd.DatetimeIndex(known["timestamps"]))
    stamps, n = past.append(after), len(past)
    fig, (ax, ax_vol) = plt.subplots(
        2, 1, figsize=(11, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    x_fc = n + after.get_indexer(forecast.index)
    origin = history["close"].iloc[-1]
    ax.plot(range(n), history["close"], color="tab:blue", lw=1.2, label="history (input)")
    ax_vol.bar(range(n), history["volume"], width=0.8, color="tab:blue", alpha=0.5,
               label="history")  # fmt: skip
    if known is not None:
        x_true = n + after.get_indexer(pd.DatetimeIndex(known["timestamps"]))
        ax.plot([n - 1, *x_true], [origin, *known["close"]], color="black", lw=1.2,
                label="actual")  # fmt: skip
        ax_vol.bar(x_true - 0.2, known["volume"], width=0.4, color="black", alpha=0.6,
                   label="actual")  # fmt: skip
    ax.plot([n - 1, *x_fc], [origin, *forecast["close"]], color="tab:orange", lw=1.4,
            marker="." if len(x_fc) < 60 else None, label="forecast (mean)")  # fmt: skip
    if len(quantiles) >= 2:
        low, high = min(quantiles), max(quantiles)
        ax.fill_between(x_fc, forecast[quantile_column("close", low)],
                        forecast[quantile_column("close", high)], color="tab:orange", alpha=0.25,
                        label=f"{format(low * 100, 'g')}-{format(high * 100, 'g')}% band")  # fmt: skip
    ax_vol.bar(x_fc + (0.2 if known is not None else 0), forecast["volume"],
               width=0.4 if known is not None else 0.8, color="tab:orange", alpha=0.8,
               label="forecast")  # fmt: skip
    for a in (ax, ax_vol):
        a.axvline(n - 0.5, color="grey", ls="--", lw=0.9)
    bar_axis((ax, ax_vol), stamps)
    ax.set_ylabel("close")
    ax_vol.set_ylabel("volume")
    step = pd.Series(stamps).diff().median()
    ax_vol.set_xlabel(_axis_text(step))
    ax.legend(loc="best", fontsize="small")
    ax_vol.set_ylim(0, ax_vol.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax_vol.legend(loc="upper left", fontsize="x-small", ncol=3)
    head = f"{title} · " if title else ""
    at = f"{past[-1]:%Y-%m-%d %H:%M}".removesuffix(" 00:00")
    ax.set_title(f"{head}origin {at} · {len(forecast)} bars ahead")
    fig.tight_layout()
    return fig


def _axis_text(step: Any) -> str:
    """The x label: bar length and where the labels are (`data.timeutil.bar_ticks`)."""
    import pandas as pd

    if pd.isna(step) or step >= pd.Timedelta(days=1):
        return "bar (labels at each month's first bar; weeks over a short span)"
    length = pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    return f"bar ({length}; labels at each day's first bar, faint lines at session starts)"


def plot_forecast(
    history: Any,
    forecast: Any,
    out: str | Path,
    quantiles: Sequence[float] = (),
    actual: Any = None,
    title: str = "",
) -> Path:
    """`forecast_figure` written to `out` (PNG)."""
    fig = forecast_figure(history, forecast, quantiles, actual, title)
    out = Path(out)
    try:
        fig.savefig(out, dpi=110)
    finally:
        import_pyplot().close(fig)
    return out


def write_forecast_plots(
    folder: Path, command: str, plots: Sequence[tuple[str, Any, Any, Any]],
    quantiles: Sequence[float] = (), model: str = "",
) -> None:  # fmt: skip
    """`predict --plot`: one PNG per `(symbol, history, forecast, actual)`, named after the
    symbol but never outside `folder` (`safe_file_names`), all written into a staging folder
    that then replaces `folder` whole (`write_output_dir`, its marker naming `command`)."""
    names = safe_file_names([symbol for symbol, *_ in plots], ".png")

    def fill(staging: Path) -> None:
        for symbol, history, forecast, actual in plots:
            title = " · ".join(filter(None, (symbol, model)))
            plot_forecast(history, forecast, staging / names[symbol], quantiles, actual, title)

    write_output_dir(folder, command, fill, marker_beside=True)
