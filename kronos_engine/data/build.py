"""From a ``DataSpec`` to clean frames and, streamed one symbol at a time, the on-disk window
store of every split (``write_splits``); ``prepare.py`` maps it into datasets.

Every entry point also takes a training config (or a mapping of config keys): it is read as
the ``DataSpec`` of the same keys (``as_data_spec``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kronos_engine.data.cleaning import REPAIR_KINDS, clean_frame
from kronos_engine.data.demo import generate_demo_frames
from kronos_engine.data.features import FEATURES
from kronos_engine.data.frequency import AUTO, FreqAgreement, freq_name, is_auto, settle_source_freq
from kronos_engine.data.markets import MARKET_SOURCES, missing_folder_hint
from kronos_engine.data.sampler import WindowSampler
from kronos_engine.data.schema import TIMESTAMP, canonical_columns, parse_freq
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.sources_csv import iter_table_frames
from kronos_engine.data.sources_qlib import iter_qlib_frames
from kronos_engine.data.spec import DataSpec, as_data_spec
from kronos_engine.data.splits import SplitPlan, make_plan, segments_for
from kronos_engine.data.store import SplitWriter
from kronos_engine.data.timeutil import NS_PER_SECOND, time_bounds
from kronos_engine.data.windows import KlineWindowDataset
from kronos_engine.errors import DataError

log = logging.getLogger("kronos_engine.data")


@dataclass
class LoadReport:
    """What loading and cleaning did, across symbols (goes into ``DataSplits.summary``)."""

    symbols_loaded: int = 0
    rows_loaded: int = 0
    repairs: Counter = field(default_factory=Counter)
    repairs_by_symbol: dict[str, dict[str, int]] = field(default_factory=dict)
    amount_derived_symbols: int = 0
    untraded_rows_dropped: int = 0
    freq: str | None = None  # the bar length read (measured with freq: auto)

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbols_loaded": self.symbols_loaded,
            "rows_loaded": self.rows_loaded,
            "repairs": {k: int(self.repairs.get(k, 0)) for k in REPAIR_KINDS},
            "repairs_by_symbol": self.repairs_by_symbol,
            "amount_derived_symbols": self.amount_derived_symbols,
            "untraded_rows_dropped": self.untraded_rows_dropped,
        }


def settled(cfg: DataSpec | Any) -> DataSpec:
    """``cfg`` as a spec with what the data says without reading bars settled: ``data_source:
    auto`` (by ``data_path``, logged once), then ``freq: auto`` where the source tells it."""
    return settle_source_freq(settle_data_source(as_data_spec(cfg)))


def _raw_frames(cfg: DataSpec, bounds) -> Iterator[tuple[str, pd.DataFrame, str, bool]]:
    """``(symbol, raw frame, origin, rows_are_file_rows)`` from the configured source."""
    if cfg.data_source == "demo":
        frames = generate_demo_frames(cfg.demo_symbols, cfg.demo_length, cfg.freq, cfg.seed)
        for symbol, frame in frames.items():
            yield symbol, frame, "demo", False
    elif cfg.data_source == "csv":
        if not cfg.data_path:
            raise DataError("data_path: required when data_source is 'csv'")
        for symbol, frame, origin in iter_table_frames(cfg.data_path, cfg.instruments):
            yield symbol, frame, origin, True
    elif cfg.data_source in MARKET_SOURCES:  # a fetched folder (markets.py), read like csv
        if not cfg.data_path or not Path(cfg.data_path).expanduser().exists():
            raise DataError(missing_folder_hint(cfg.data_source, cfg.data_path or ""))
        for symbol, frame, origin in iter_table_frames(cfg.data_path, cfg.instruments):
            yield symbol, frame, origin, True
    elif cfg.data_source == "qlib":
        if not cfg.data_path:
            raise DataError("data_path: required when data_source is 'qlib' (the provider folder)")
        for symbol, frame, origin in iter_qlib_frames(
            cfg.data_path, cfg.instruments, cfg.freq, cfg.qlib_region, bounds
        ):
            yield symbol, frame, origin, False
    else:
        raise DataError(
            f"data_source: '{cfg.data_source}' is not allowed; choose one of "
            f"{['demo', 'csv', 'qlib', *MARKET_SOURCES]}"
        )


def iter_clean_frames(
    cfg: DataSpec | Any, report: LoadReport | None = None
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Clean canonical frames one symbol at a time (bounded memory for big universes)."""
    cfg = settled(cfg)
    report = report if report is not None else LoadReport()
    if cfg.bad_data not in ("error", "repair"):
        raise DataError(
            f"bad_data: '{cfg.bad_data}' is not allowed; choose one of ['error', 'repair']"
        )
    freq = AUTO if is_auto(cfg.freq) else parse_freq(cfg.freq)
    agreement = FreqAgreement()
    bounds = time_bounds(
        cfg.dataset_begin_time, cfg.dataset_end_time, "dataset_begin_time/end_time"
    )
    derived = []
    for symbol, raw, origin, file_rows in _raw_frames(cfg, bounds):
        canon = canonical_columns(raw, origin, symbol)
        frame, rep = clean_frame(
            canon,
            origin=origin,
            symbol=symbol,
            policy=cfg.bad_data,
            bounds=bounds,
            file_rows=file_rows,
            drop_untraded=cfg.data_source == "qlib",
            freq=freq,
        )
        if rep.freq is not None:
            agreement.add(symbol, rep.freq, origin)
        report.symbols_loaded += 1
        report.rows_loaded += len(frame)
        report.untraded_rows_dropped += rep.untraded_rows_dropped
        report.amount_derived_symbols += int(rep.amount_derived)
        if rep.amount_derived:
            derived.append(symbol)
        if rep.repairs:
            report.repairs.update(rep.repairs)
            report.repairs_by_symbol[symbol] = {k: int(v) for k, v in rep.repairs.items()}
            log.warning(
                "%s: symbol %s repaired: %s",
                origin,
                symbol,
                ", ".join(f"{k}={v}" for k, v in sorted(rep.repairs.items())),
            )
        yield symbol, frame
    if freq == AUTO and agreement.freq is not None:
        report.freq = agreement.freq.name
        log.info(
            "freq: auto -> %s (the most common spacing of two bars of one day; %d symbol(s))",
            report.freq, report.symbols_loaded,
        )  # fmt: skip
    elif freq != AUTO:
        report.freq = freq.name
    if derived:
        log.info(
            "amount: absent, empty or all zero for %d symbol(s) (%s); derived as "
            "mean(open, high, low, close) x volume",
            len(derived), ", ".join(derived[:3]) + (", ..." if len(derived) > 3 else ""),
        )  # fmt: skip


def load_frames(cfg: DataSpec | Any, report: LoadReport | None = None) -> dict[str, pd.DataFrame]:
    """All symbols as clean frames (``timestamps`` + six float64 features), sorted by symbol."""
    frames = dict(iter_clean_frames(cfg, report))
    return {symbol: frames[symbol] for symbol in sorted(frames)}


@dataclass
class DataSplits:
    """The datasets of one run plus a JSON-serialisable summary of how they were built."""

    train: KlineWindowDataset
    val: KlineWindowDataset
    test: KlineWindowDataset | None
    summary: dict[str, Any]

    def train_sampler(self, cfg: Any, rank: int = 0, world_size: int = 1) -> WindowSampler:
        """The configured training sampler (``cfg``'s ``sampling``, ``train_samples_per_epoch``
        and ``seed``: training keys, not data keys)."""
        return WindowSampler(
            self.train, cfg.sampling, cfg.train_samples_per_epoch, cfg.seed, rank, world_size
        )

    def eval_sampler(
        self, cfg: Any, split: str = "val", rank: int = 0, world_size: int = 1
    ) -> WindowSampler:
        """A fixed sequential sampler over ``split`` (``cfg.val_samples`` evenly spaced, or
        all)."""
        dataset = self.val if split == "val" else self.test
        if dataset is None:
            raise DataError(f"eval_sampler: split '{split}' does not exist in this run")
        return WindowSampler(dataset, "sequential", cfg.val_samples, cfg.seed, rank, world_size)


def _zero_window_hint(name: str, cfg: DataSpec, plan: SplitPlan) -> str:
    need = cfg.predict_window + 1 if name != "train" else cfg.window_len
    if plan.mode == "time_ranges":
        where = f"{name}_time_range {plan.ranges[name]}"
        change = f"widen {name}_time_range"
    else:
        where = f"its share of split_ratios {list(plan.ratios)}"
        change = "raise its split ratio"
        if name == "test":
            change += " or set split_ratios' test share to 0"
    return (
        f"{name} split has 0 windows: no symbol has {need} rows in {where} "
        f"(window = lookback_window {cfg.lookback_window} + predict_window {cfg.predict_window} "
        f"+ 1); {change}, lower lookback_window/predict_window, or add data"
    )


def _target_range(record: dict[str, Any]) -> dict[str, str | None]:
    """First and last predicted timestamp of a split, for the summary."""
    first, last = record["first_target"], record["last_target"]
    if first is None:
        return {"first_target": None, "last_target": None}
    return {
        "first_target": str(pd.Timestamp(int(first) * NS_PER_SECOND)),
        "last_target": str(pd.Timestamp(int(last) * NS_PER_SECOND)),
    }


def write_splits(cfg: DataSpec | Any, folder: Path) -> tuple[dict[str, dict[str, Any]], dict]:
    """Load, clean and cut every symbol into the per-split stores under ``folder``, appending
    one symbol at a time (peak memory: the largest symbol, not the market); return each split's
    manifest record and the summary (its `freq`: the bar length read, also with `freq: auto`)."""
    cfg = settled(cfg)
    plan = make_plan(
        cfg.train_time_range, cfg.val_time_range, cfg.test_time_range, cfg.split_ratios
    )
    window_len = cfg.window_len
    report = LoadReport()
    dropped: dict[str, str] = {}
    writers = {n: SplitWriter(folder / n, window_len, cfg.lookback_window) for n in plan.names}
    try:
        for symbol, frame in iter_clean_frames(cfg, report):
            ns = frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64)
            if len(ns) < window_len:
                dropped[symbol] = f"{len(ns)} rows; a window needs {window_len}"
                continue
            values = frame[list(FEATURES)].to_numpy(dtype=np.float32)
            seconds = ns // NS_PER_SECOND
            used = False
            for name, (start, end) in segments_for(plan, ns, cfg.lookback_window).items():
                if end - start >= window_len:
                    writers[name].append(symbol, values[start:end], seconds[start:end])
                    used = True
            if not used:
                dropped[symbol] = "no window in any split"
        _check_loaded(cfg, plan, report, dropped, writers)
        records = {name: writers[name].finish() for name in plan.names}
    finally:
        for writer in writers.values():
            writer.abandon()
    used_symbols = set().union(*(set(r["symbols"]) for r in records.values()))
    summary: dict[str, Any] = {
        "source": cfg.data_source,
        "data_path": cfg.data_path,
        "instruments": cfg.instruments,
        "freq": report.freq or freq_name(cfg.freq),
        "fields": list(FEATURES),
        "window_len": window_len,
        "lookback_window": cfg.lookback_window,
        "predict_window": cfg.predict_window,
        "bad_data": cfg.bad_data,
        "split": plan.describe(),
        "symbols_used": len(used_symbols),
        "symbols_dropped": dict(sorted(dropped.items())),
        "symbols": {n: len(r["symbols"]) for n, r in records.items()},
        "windows": {n: r["windows"] for n, r in records.items()},
        "rows": {n: r["rows"] for n, r in records.items()},
        "targets": {n: _target_range(r) for n, r in records.items()},
        **report.as_dict(),
    }
    return records, summary


def _check_loaded(cfg, plan, report, dropped, writers) -> None:
    """No symbol at all, or a split without a window, is one line (naming the short files)."""
    if report.symbols_loaded == 0:
        raise DataError(
            f"{cfg.data_source}: no symbols loaded from data_path '{cfg.data_path}' with "
            f"instruments '{cfg.instruments}' in [{cfg.dataset_begin_time}, {cfg.dataset_end_time}]"
        )
    if dropped:
        log.warning(
            "dropped %d of %d symbols too short for a %d-row window: %s",
            len(dropped),
            report.symbols_loaded,
            cfg.window_len,
            ", ".join(f"{s} ({r})" for s, r in list(dropped.items())[:10])
            + (" ..." if len(dropped) > 10 else ""),
        )
    for name in plan.names:
        if not writers[name].segments:  # every stored segment holds at least one window
            hint = _zero_window_hint(name, cfg, plan)
            if dropped:  # name the culprits too (an empty or short file), not only the cause
                shown = ", ".join(f"{s} ({r})" for s, r in list(dropped.items())[:5])
                more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
                source = f"data_path '{cfg.data_path}'" if cfg.data_path else cfg.data_source
                hint += f"; too short in {source}: {shown}{more}"
            raise DataError(hint)
