"""`scripts/predict.py`: forecast the bars after each symbol's history with a trained run.

Data are read exactly as training reads them (same sources, column spellings, symbol handling
and bad-row policy), by default with the run's own data settings, so `--exp_dir` alone
forecasts the bars after the run's data. Symbols too short for the lookback, or whose future
timestamps cannot be told, are named in one line and skipped; nothing is written until every
forecast is done, and the output file is replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.config.rules import resolve_device
from kronos_engine.data import iter_clean_frames
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import DataError, ForecastError, PlotError
from kronos_engine.extras import import_pyplot
from kronos_engine.forecasting.calendars import check_calendar
from kronos_engine.forecasting.forecast import COLUMNS
from kronos_engine.forecasting.options import (
    SamplingOptions,
    check_count,
    check_pred_len,
    check_quantiles,
)
from kronos_engine.forecasting.predictor import KronosPredictor
from kronos_engine.forecasting.timestamps import infer_future_stamps
from kronos_engine.fsio import atomic_save
from kronos_engine.plotting import write_forecast_plots
from kronos_engine.run.finished import find_predictor_run
from kronos_engine.run.outputs_guard import (
    check_output_dir,
    check_output_file,
)

log = logging.getLogger("kronos_engine")

PLOT_COMMAND = "predict --plot"  # the command named by a plot folder's marker
FLAG_DATA_KEYS = ("data_source", "data_path", "instruments", "freq", "bad_data")


def run_data_keys() -> list[str]:
    """The run-config keys that decide which bars training read (`DataSpec`'s keys: the data
    build's keys, with `seed`, which generates the demo data)."""
    return list(DataSpec.keys())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/predict.py",
        description="Forecast the next bars of every symbol with a trained tokenizer+predictor.",
        formatter_class=DefaultsHelpFormatter,
    )
    src = p.add_argument_group("model (either --exp_dir, or --tokenizer and --predictor)")
    src.add_argument("--exp_dir", help="experiment dir or predictor run dir (uses its best/)")
    src.add_argument("--tokenizer", help="tokenizer model folder (config.json + safetensors)")
    src.add_argument("--predictor", help="predictor model folder (config.json + safetensors)")
    data = p.add_argument_group("data (default: the run's own data settings)")
    data.add_argument("--data_path", help="CSV/Parquet file or folder, or a Qlib provider folder")
    data.add_argument("--data_source", choices=("auto", "demo", "csv", "qlib"),
                      help="(default: the run's; with --data_path: auto, told by data_path)")  # fmt: skip
    data.add_argument("--instruments", help="'all' or comma-separated symbols")
    data.add_argument(
        "--freq", help="bar length of the data: 'auto' (read from it), 'day' or e.g. '5min'"
    )
    data.add_argument("--bad_data", choices=("error", "repair"))
    data.add_argument("--as_of", help="forecast from the bars up to this time (default: all)")
    fc = p.add_argument_group("forecast")
    fc.add_argument("--lookback", type=int, help="history bars per symbol (default: the run's)")
    fc.add_argument("--pred_len", type=int, help="bars to forecast (default: the run's)")
    fc.add_argument("--quantiles", help="comma-separated, e.g. 0.1,0.5,0.9 (sample_count >= 2)")
    fc.add_argument("--calendar", help="future stamps on an exchange's sessions: XSHG, XNYS, 24/7")
    add_sampling_arguments(fc, batch_size=32, batch_help="symbols forecast together")
    out = p.add_argument_group("output")
    out.add_argument("--output", help="CSV or Parquet file (default <exp_dir>/forecast.csv)")
    out.add_argument("--plot", nargs="?", const="", help="write a PNG per symbol to this folder")
    return p


def add_sampling_arguments(group: Any, *, batch_size: int, batch_help: str) -> None:
    """The sampling, batching and device flags of every command that forecasts."""
    group.add_argument("--sample_count", type=int, default=1, help="sample paths per forecast")
    group.add_argument("--T", type=float, default=1.0, help="sampling temperature")
    group.add_argument("--top_k", type=int, default=0, help="top-k sampling (1 = greedy)")
    group.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    group.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    group.add_argument("--max_context", type=int, default=512, help="model context in tokens")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                       help="bf16: the predictor under bf16 autocast")  # fmt: skip


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling flags of `add_sampling_arguments` as one value (a bad one names its flag)."""
    return SamplingOptions.named(
        "--", T=args.T, top_k=args.top_k, top_p=args.top_p, sample_count=args.sample_count,
        seed=args.seed,
    )  # fmt: skip


@dataclass(frozen=True)
class ForecastFlags:
    """The flags of `add_sampling_arguments`, checked by the forecasting rules before any
    work: the sampling, the batch size and the `KronosPredictor` keywords."""

    sampling: SamplingOptions
    batch_size: int
    max_context: int
    model: dict[str, Any]  # device, max_context, precision


def forecast_flags(args: argparse.Namespace) -> ForecastFlags:
    """`add_sampling_arguments`' flags, each refused in one line naming it when bad."""
    sampling = sampling_options(args)
    batch_size = check_count(args.batch_size, "--batch_size")
    max_context = check_count(args.max_context, "--max_context")
    device = resolve_device(args.device, "--device", ForecastError)
    model = dict(device=device, max_context=max_context, precision=args.precision)
    return ForecastFlags(sampling, batch_size, max_context, model)


def check_lookback(lookback: int, max_context: int, source: str) -> None:
    """The model sees at most `max_context` bars: a longer lookback would be cut silently."""
    if lookback > max_context:
        raise ForecastError(
            f"--lookback: {lookback}{source} exceeds --max_context {max_context}; the model "
            f"would see only the last {max_context} bars. Lower --lookback to at most "
            f"{max_context} or raise --max_context to at least {lookback}"
        )


@dataclass
class Job:
    """What to forecast: the model, data settings and forecast options, resolved."""

    predictor: KronosPredictor
    data: DataSpec
    lookback: int
    pred_len: int
    output: Path
    flags: ForecastFlags
    calendar: str | None = None  # --calendar: the exchange whose sessions the future follows


def main(argv: Sequence[str] | None = None) -> int:

    setup_logging()
    try:
        return run(build_parser().parse_args(argv))
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)  # a ForecastError: one line, exit 2


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        try:
            import_pyplot()  # before any work: a missing matplotlib is one line, not a late failure
        except PlotError as exc:
            raise ForecastError(f"--plot: {exc}") from None
    flags = forecast_flags(args)
    quantiles = check_quantiles(
        _parse_quantiles(args.quantiles), flags.sampling.sample_count, "--quantiles"
    )
    cutoff = parse_as_of(args.as_of)
    job = resolve_job(args, flags)
    histories, skipped = collect_histories(job, cutoff)
    if skipped:
        log.warning("skipped %d symbol(s): %s", len(skipped), "; ".join(skipped))
    if not histories:
        raise ForecastError("no symbol could be forecast" + (f": {skipped[0]}" if skipped else ""))
    n, samples = len(histories), flags.sampling.sample_count
    log.info("forecasting %d symbol(s) x %d sample path(s) = %d forecasts of %d bars",
             n, samples, n * samples, job.pred_len)  # fmt: skip
    table = forecast_all(job, histories, quantiles)
    write_table(table, job.output)
    folder = plot_folder(args, job.output)
    if folder is not None:
        model = "/".join(Path(args.exp_dir or args.predictor).parts[-2:])  # a title, not a path
        forecasts = {s: part.set_index("timestamp") for s, part in table.groupby("symbol")}
        plots = [(h.symbol, h.frame, forecasts[h.symbol], h.actual) for h in histories]
        write_forecast_plots(folder, PLOT_COMMAND, plots, quantiles, model)
        print(f"plots -> {folder}")
    print(f"forecast {len(histories)} symbol(s) x {job.pred_len} bars -> {job.output}")
    return 0


def resolve_job(args: argparse.Namespace, flags: ForecastFlags) -> Job:
    calendar = check_calendar(args.calendar, "--calendar")
    if args.exp_dir and (args.tokenizer or args.predictor):
        raise ForecastError("give either --exp_dir or --tokenizer and --predictor, not both")
    if args.exp_dir:
        run = find_predictor_run(args.exp_dir)
        models = (run.tokenizer_dir, run.predictor_dir)
        config, default_out = run.config, Path(args.exp_dir) / "forecast.csv"
    elif args.tokenizer and args.predictor:
        models = (Path(args.tokenizer), Path(args.predictor))
        config, default_out = {}, Path("forecast.csv")
    else:
        raise ForecastError("--exp_dir, or both --tokenizer and --predictor, are required")
    data = data_spec(config, args)
    lookback = _positive(args.lookback, config.get("lookback_window"), "--lookback")
    pred_len = check_pred_len(
        _positive(args.pred_len, config.get("predict_window"), "--pred_len"), "--pred_len"
    )
    from_run = " (the run's lookback_window)" if args.lookback is None else ""
    check_lookback(lookback, flags.max_context, from_run)
    output = Path(args.output) if args.output else default_out
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise ForecastError(f"--output: '{output}' must end in .csv or .parquet")
    check_outputs(output, plot_folder(args, output), data, models)
    clip = {"clip": run.clip} if args.exp_dir else {}
    predictor = KronosPredictor.from_pretrained(*models, **clip, **flags.model)
    return Job(predictor, data, lookback, pred_len, output, flags, calendar)


def plot_folder(args: argparse.Namespace, output: Path) -> Path | None:
    """`--plot`'s folder (bare `--plot`: `plots/` beside the output file), None without it."""
    if args.plot is None:
        return None
    return Path(args.plot) if args.plot else output.with_suffix("").parent / "plots"


def check_outputs(output: Path, plots: Path | None, data: DataSpec, models: Sequence[Path]) -> None:
    """Before any work: the forecast file and the plot folder are new or predict's own
    (`run.outputs_guard`), never the data read, a model, a run's files, or each other."""
    inputs = [data.data_path if data.data_source != "demo" else None, *models]
    check_output_file(
        output, flag="--output", command="predict", error=ForecastError, inputs=inputs
    )
    if plots is None:
        return
    check_output_dir(plots, flag="--plot", command=PLOT_COMMAND, error=ForecastError, inputs=inputs)
    real_out, real_plots = os.path.realpath(output), os.path.realpath(plots)
    if os.path.commonpath([real_out, real_plots]) == real_plots:
        raise ForecastError(
            f"--plot: '{plots}' holds the --output file '{output}'; the plot folder is "
            "replaced whole, give one that does not hold the forecast"
        )


def data_spec(config: Mapping[str, Any], args: argparse.Namespace) -> DataSpec:
    """The run's data settings (`config`: its config.yaml, `{}` without a run) with the data
    flags over them: `--data_path` alone reads every symbol of that CSV/Parquet data."""
    data = {k: config[k] for k in run_data_keys() if k in config}
    if args.data_path:
        data.update(data_path=args.data_path, data_source=args.data_source or "auto")
        data.update(instruments="all", dataset_begin_time=None, dataset_end_time=None)
    for key in FLAG_DATA_KEYS:
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    return settle_data_source(DataSpec.from_mapping(data))  # auto: as training tells it


def _positive(value: int | None, default: object, flag: str) -> int:
    value = value if value is not None else default
    if value is None:
        raise ForecastError(f"{flag}: required (no run config to take it from)")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ForecastError(f"{flag}: must be a positive integer, got {value!r}")
    return value


def _parse_quantiles(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        return [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise ForecastError(
            f"--quantiles: '{text}' is not a comma-separated list of numbers"
        ) from None


@dataclass
class History:
    symbol: str
    frame: pd.DataFrame  # timestamps + six features, the last `lookback` bars
    future: pd.DatetimeIndex
    actual: pd.DataFrame | None = None  # the data's bars after the history (`--as_of`)


def parse_as_of(as_of: str | None) -> pd.Timestamp | None:
    """`--as_of` as a wall-clock time: the data's timestamps are naive wall-clock times (a UTC
    offset in the data keeps its wall time), so an offset here would compare other instants."""
    if not as_of:
        return None
    try:
        cutoff = pd.Timestamp(as_of)
    except (ValueError, TypeError, OverflowError):
        cutoff = None
    if cutoff is None or cutoff is pd.NaT:
        raise ForecastError(
            f"--as_of: '{as_of}' is not a date or datetime; use e.g. 2024-03-01 or "
            "'2024-03-01 15:00'"
        )
    if cutoff.tz is not None:
        raise ForecastError(
            f"--as_of: '{as_of}' has a time zone, but the data's timestamps are wall-clock "
            "times without one; give the wall-clock time of the data, without an offset"
        )
    return cutoff


def collect_histories(job: Job, cutoff: pd.Timestamp | None) -> tuple[list[History], list[str]]:
    """The last `lookback` bars (up to `cutoff`, `--as_of`) of each symbol and its future
    stamps (on `--calendar`'s sessions where the data stop)."""
    histories, skipped = [], []
    for symbol, frame in _clean_frames(job.data):
        rows = frame if cutoff is None else frame[frame["timestamps"] <= cutoff]
        if len(rows) < job.lookback:
            skipped.append(f"{symbol} has {len(rows)} bars, lookback is {job.lookback}")
            continue
        try:
            future = _future_stamps(frame, rows, job)
        except ForecastError as exc:
            skipped.append(f"{symbol}: {exc}")
            continue
        actual = frame.iloc[len(rows) : len(rows) + job.pred_len]
        histories.append(History(symbol, rows.iloc[-job.lookback :], future, actual))
    return histories, skipped


def _clean_frames(data: DataSpec) -> Iterator[tuple[str, pd.DataFrame]]:

    if data.data_source == "demo" and data.data_path:  # the training config's wording
        raise ForecastError(
            f"data_path: '{data.data_path}' is set but data_source is 'demo' (the built-in "
            f"synthetic data); add --data_source=csv (or qlib) to train on it"
        )
    if data.data_source != "demo" and not data.data_path:
        raise ForecastError(f"data_path: required when data_source is '{data.data_source}'")
    try:
        yield from iter_clean_frames(data)
    except DataError as exc:
        raise ForecastError(str(exc)) from None


def _future_stamps(frame: pd.DataFrame, rows: pd.DataFrame, job: Job) -> pd.DatetimeIndex:
    """The data's own next timestamps when it goes on past the history (exact sessions and
    holidays), else `--calendar`'s next bars, else the history's frequency continued."""
    pred_len = job.pred_len
    after = frame["timestamps"].iloc[len(rows) : len(rows) + pred_len]
    if len(after) == pred_len:
        return pd.DatetimeIndex(after, name="timestamps")
    history = pd.DatetimeIndex(rows["timestamps"])
    return infer_future_stamps(history, pred_len, job.calendar)


def forecast_all(job: Job, histories: list[History], quantiles: list[float]) -> pd.DataFrame:
    """Forecast in batches of `--batch_size` symbols; one long table."""
    parts, size = [], job.flags.batch_size
    options = job.flags.sampling
    with tqdm(total=len(histories), desc="symbols", unit="symbol") as bar:
        for start in range(0, len(histories), size):
            chunk = histories[start : start + size]
            frames, _ = job.predictor.forecast_frames(
                [h.frame[COLUMNS] for h in chunk],
                [h.frame["timestamps"] for h in chunk],
                [h.future for h in chunk],
                job.pred_len,
                options.with_seed(options.seed + start),
                quantiles=quantiles,
            )
            for history, frame in zip(chunk, frames):
                frame = frame.reset_index(names="timestamp")
                frame.insert(0, "symbol", history.symbol)
                parts.append(frame)
            bar.update(len(chunk))
    return pd.concat(parts, ignore_index=True)


def write_table(table: pd.DataFrame, output: Path) -> None:
    """Write next to the target, then rename: a failure never leaves a half-written file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".parquet":
        atomic_save(output, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        atomic_save(output, lambda tmp: table.to_csv(tmp, index=False))
