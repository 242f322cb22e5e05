"""Fetching a market source into its local folder: ``data_source: sina`` or ``ccxt``.

`fetch_market` is the one entry point (`scripts/download.py`, and `scripts/pipeline.py` before
it trains). Every check that needs no network comes first (symbols, file names, ``freq``, the
stored files themselves); then every symbol is fetched; only when all answered is each
symbol's file grown (`market_store`), one atomic replacement per file. So an offline service,
an unknown symbol or a malformed answer leaves the folder exactly as it was, and a kill at any
moment leaves every file either as it was or grown. Training and forecasting then read the
folder like ``data_source: csv`` (`build._raw_frames`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from kronos_engine.data.frequency import is_auto
from kronos_engine.data.market_store import MarketStore, MergeReport, check_file_names
from kronos_engine.data.spec import as_data_spec
from kronos_engine.errors import DataError

log = logging.getLogger("kronos_engine.data")

MARKET_SOURCES: tuple[str, ...] = ("sina", "ccxt")


def market_symbols(spec: Any) -> list[str]:
    """The symbols to fetch, checked for the source's symbol form."""
    if spec.data_source == "sina":
        from kronos_engine.data.market_sina import sina_symbols

        return sina_symbols(spec.instruments)
    from kronos_engine.data.market_ccxt import ccxt_symbols

    return ccxt_symbols(spec.instruments)


def check_market(spec: Any) -> None:
    """The checks of a fetch that need no network (also run before a pipeline holds its
    output dirs' data build): source, folder, symbols, file names, bar length."""
    spec = as_data_spec(spec)
    if spec.data_source not in MARKET_SOURCES:
        raise DataError(
            f"data_source: '{spec.data_source}' has nothing to fetch; choose one of "
            f"{list(MARKET_SOURCES)}"
        )
    if not spec.data_path:
        raise DataError(
            f"data_path: required when data_source is '{spec.data_source}' (the folder the "
            f"fetched bars are stored in)"
        )
    check_file_names(market_symbols(spec))
    if is_auto(spec.freq):
        raise DataError(
            f"freq: a {spec.data_source} fetch asks for one bar length; set freq (e.g. 5min or "
            f"day): auto reads the length of bars already stored, it cannot ask for one"
        )
    if spec.data_source == "sina":
        from kronos_engine.data.market_sina import sina_scale

        sina_scale(spec.freq)
    else:
        from kronos_engine.data.market_ccxt import ccxt_timeframe, parse_since

        ccxt_timeframe(spec.freq)
        parse_since(spec.fetch_since)


def fetch_market(spec: Any) -> list[MergeReport]:
    """Fetch every configured symbol and grow its file in ``data_path``; one report each."""
    spec = as_data_spec(spec)
    check_market(spec)
    store = MarketStore(spec.data_path)
    symbols = market_symbols(spec)
    stored = {symbol: store.read(symbol) for symbol in symbols}  # a bad file stops here
    if spec.data_source == "sina":
        from kronos_engine.data.market_sina import fetch_sina

        frames = fetch_sina(spec)
    else:
        from kronos_engine.data.market_ccxt import fetch_ccxt

        frames = fetch_ccxt(spec, lambda symbol: _last_bar(stored[symbol]))
    reports = []
    for symbol in symbols:
        merged, report = store.merge(symbol, stored[symbol], frames[symbol])
        reports.append(store.write(symbol, merged, report))
        log.info("%s: %s", spec.data_source, report.describe())
    return reports


def _last_bar(frame: pd.DataFrame | None) -> pd.Timestamp | None:
    if frame is None or frame.empty:
        return None
    return pd.Timestamp(frame["timestamps"].iloc[-1])


def missing_folder_hint(data_source: str, data_path: str) -> str:
    """The line for training on a market folder that was never fetched."""
    return (
        f"data_path: '{Path(data_path).expanduser()}' does not exist; fetch the bars first "
        f"with scripts/download.py --source {data_source} (or run scripts/pipeline.py "
        f"without --skip-data-process)"
    )
