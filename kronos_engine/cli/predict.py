"""`scripts/predict.py`: forecast the bars after each symbol's history with a trained run.

Data are read exactly as training reads them (same sources, column spellings, symbol handling
and bad-row policy), by default with the run's own data settings, so `--exp_dir` alone
forecasts the bars after the run's data. Symbols too short for the lookback, or whose future
timestamps cannot be told, are named in one line and skipped; nothing is written until every
forecast is done, and the output file is replaced atomically.

`--nprocs N` (or torchrun) shards the symbols' batches over N processes (`cli.processes`);
rank 0 writes the same file, byte for byte, as one process: each symbol samples from its own
stream (its symbol, its last bar's time and `--seed`), so no number depends on the batch,
`--batch_size` or the rank.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from kronos_engine import distenv
from kronos_engine.cli.forecast_flags import (
    ForecastFlags,
    add_sampling_arguments,
    check_lookback,
    forecast_flags,
)
from kronos_engine.cli.forecast_job import History, Job, collect_histories, parse_as_of
from kronos_engine.cli.helpformat import DefaultsHelpFormatter
from kronos_engine.cli.processes import finish, join, launch_if_asked, leave
from kronos_engine.cli.shell import exit_code_for, setup_logging
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import ForecastError, PlotError
from kronos_engine.extras import import_pyplot
from kronos_engine.forecasting.calendars import check_calendar
from kronos_engine.forecasting.forecast import COLUMNS
from kronos_engine.forecasting.options import check_pred_len, check_quantiles
from kronos_engine.forecasting.predictor import KronosPredictor
from kronos_engine.forecasting.shards import Shard, in_order
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


def main(argv: Sequence[str] | None = None) -> int:

    setup_logging()
    try:
        code, args = launch_if_asked("predict", argv, build_parser().parse_args, prepare)
        return code if args is None else run(args)
    except (SystemExit, KeyboardInterrupt, Exception) as exc:
        return exit_code_for(exc)  # a ForecastError: one line, exit 2
    finally:
        leave()


@dataclass
class Prepared:
    """A checked command: the job, the histories to forecast and the quantile columns."""

    job: Job
    histories: list[History]
    quantiles: list[float]


def prepare(args: argparse.Namespace, report: bool = False) -> Prepared:
    """Every check, then the data read: what is forecast (nothing is run or written).
    `report`: log the skipped symbols (the process that forecasts, not the `--nprocs` check)."""
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
    if skipped and report:
        log.warning("skipped %d symbol(s): %s", len(skipped), "; ".join(skipped))
    if not histories:
        raise ForecastError("no symbol could be forecast" + (f": {skipped[0]}" if skipped else ""))
    return Prepared(job, histories, quantiles)


def run(args: argparse.Namespace) -> int:
    prepared = prepare(args, report=distenv.is_rank0())
    job, histories, quantiles = prepared.job, prepared.histories, prepared.quantiles
    n, samples = len(histories), job.flags.sampling.sample_count
    log.info("forecasting %d symbol(s) x %d sample path(s) = %d forecasts of %d bars",
             n, samples, n * samples, job.pred_len)  # fmt: skip
    shard = join()
    table = forecast_all(job, histories, quantiles, shard)
    if table is None:  # another rank than 0: its forecasts went to rank 0
        finish(shard)
        return 0
    write_table(table, job.output)
    folder = plot_folder(args, job.output)
    if folder is not None:
        model = "/".join(Path(args.exp_dir or args.predictor).parts[-2:])  # a title, not a path
        forecasts = {s: part.set_index("timestamp") for s, part in table.groupby("symbol")}
        plots = [(h.symbol, h.frame, forecasts[h.symbol], h.actual) for h in histories]
        write_forecast_plots(folder, PLOT_COMMAND, plots, quantiles, model)
        print(f"plots -> {folder}")
    print(f"forecast {len(histories)} symbol(s) x {job.pred_len} bars -> {job.output}")
    finish(shard)
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
    flags = flags.for_run(config)
    data = data_spec(config, args)
    lookback = _positive(args.lookback, config.get("lookback_window"), "--lookback")
    pred_len = check_pred_len(
        _positive(args.pred_len, config.get("predict_window"), "--pred_len"), "--pred_len"
    )
    from_run = " (the run's lookback_window)" if args.lookback is None else ""
    check_lookback(lookback, flags, from_run)
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


def forecast_all(
    job: Job, histories: list[History], quantiles: list[float], shard: Shard | None = None
) -> pd.DataFrame | None:
    """Forecast in batches of `--batch_size` symbols; one long table (on rank 0 of a job of
    several processes, each running every `world`-th batch; None on the other ranks). Each
    symbol is keyed by its name in the sampling, so a batch's members never change a number."""
    size, options = job.flags.batch_size, job.flags.sampling
    starts = range(0, len(histories), size)

    def one_batch(b: int) -> list[pd.DataFrame]:
        chunk = histories[starts[b] : starts[b] + size]
        frames, _ = job.predictor.forecast_frames(
            [h.frame[COLUMNS] for h in chunk],
            [h.frame["timestamps"] for h in chunk],
            [h.future for h in chunk],
            job.pred_len,
            options,
            quantiles=quantiles,
            keys=[h.symbol for h in chunk],
        )
        out = []
        for history, frame in zip(chunk, frames):
            frame = frame.reset_index(names="timestamp")
            frame.insert(0, "symbol", history.symbol)
            out.append(frame)
        return out

    parts: list[pd.DataFrame] = []
    main = shard is None or shard.is_main
    with tqdm(total=len(histories), desc="symbols", unit="symbol", disable=not main) as bar:
        for frames in in_order(len(starts), one_batch, shard):
            parts.extend(frames)
            bar.update(len(frames))
    return pd.concat(parts, ignore_index=True) if main else None


def write_table(table: pd.DataFrame, output: Path) -> None:
    """Write next to the target, then rename: a failure never leaves a half-written file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".parquet":
        atomic_save(output, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        atomic_save(output, lambda tmp: table.to_csv(tmp, index=False))
