"""The bars a run read, as a Qlib provider for `scripts/backtest.py`.

Qlib trades a provider folder; a run that read the demo data, CSV/Parquet files or a market
folder has none. Rather than ask the user to write one, the backtest writes the run's own bars
into a temporary folder: the run's `DataSpec` (its `config.yaml`) read through the data build's
own reader and cleaning (`data.load_frames`, so the bars are those the run trained and was
evaluated on), written by `data.write_qlib_provider`, and removed when the backtest ends or
fails. Daily bars only: the backtest trades a daily calendar.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kronos_engine.data import DataSpec, LoadReport, load_frames, parse_freq, write_qlib_provider
from kronos_engine.data.frequency import is_auto
from kronos_engine.data.sources import settle_data_source
from kronos_engine.errors import BacktestError

log = logging.getLogger("kronos_engine")

TEMP_PREFIX = "kronos_backtest_bars_"  # the temporary provider's folder name starts so


def run_data_spec(config: Mapping[str, Any]) -> DataSpec:
    """The run's data settings as its data build read them (`data_source: auto` settled by
    `data_path`, as training settled it)."""
    return settle_data_source(DataSpec.from_mapping(config), announce=False)


def describe(spec: DataSpec) -> str:
    """Which bars a spec reads, for the log line and error messages."""
    if spec.data_source == "demo":
        return (
            f"the run's demo data ({spec.demo_symbols} symbols x {spec.demo_length} bars, "
            f"seed {spec.seed})"
        )
    return f"the run's {spec.data_source} data_path '{spec.data_path}'"


def check_daily_run(freq: str, spec: DataSpec) -> None:
    """Refuse a run of intraday bars before anything is read: the backtest trades a daily
    calendar, where bars at times of day do not exist."""
    if is_auto(freq):
        return  # measured while the bars are read (`run_bars_provider`)
    name = parse_freq(freq).name
    if name != "day":
        raise BacktestError(
            f"freq: {describe(spec)} has {name} bars (config.yaml freq '{freq}'); the backtest "
            "trades daily bars only (allowed: freq day)"
        )


@contextmanager
def run_bars_provider(spec: DataSpec) -> Iterator[Path]:
    """A temporary Qlib provider (`calendars/day.txt`, `features/`) of the bars `spec` reads,
    cleaned as the run's data build cleaned them; the folder is created here and removed on
    leaving, also on an error."""
    check_daily_run(spec.freq, spec)
    report = LoadReport()
    frames = load_frames(spec, report)
    if report.freq is not None:
        check_daily_run(report.freq, spec)
    if not frames:
        raise BacktestError(f"{describe(spec)}: no symbols read; nothing to trade on")
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    try:
        write_qlib_provider(frames, folder, "day")
        rows = sum(len(f) for f in frames.values())
        log.info(
            "backtest bars: %s, %d symbols, %d daily bars, cleaned as the run read them; "
            "written as a temporary Qlib provider %s (removed at the end)",
            describe(spec), len(frames), rows, folder,
        )  # fmt: skip
        yield folder
    finally:
        try:
            shutil.rmtree(folder)
        except OSError as exc:  # never hide the backtest's own error behind this one
            log.warning("could not remove the temporary provider %s (%s)", folder, exc)


__all__ = ["TEMP_PREFIX", "check_daily_run", "describe", "run_bars_provider", "run_data_spec"]
