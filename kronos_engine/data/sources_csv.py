"""CSV / Parquet sources: one file per symbol, a folder of them, or one long table.

A file whose columns include ``symbol``/``instrument``/``code``/``ticker`` is a long table
(one symbol per distinct value); any other file holds one symbol named after the file stem.
Frames are yielded one symbol at a time so the caller can compact them as it goes. Bars are
used as they are: the configured ``freq`` labels the data but does not resample it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_engine.data.schema import ROW, find_symbol_column
from kronos_engine.errors import DataError

TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".csv.zip", ".parquet", ".pq")


def table_suffix(path: Path) -> str | None:
    """The table suffix of `path` (`.csv.gz`, `.parquet`, ...), None for any other file."""
    name = path.name.lower()
    for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def symbol_from_path(path: Path) -> str:
    suffix = table_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)]


def list_table_files(data_path: str | Path) -> list[Path]:
    """The data files behind ``data_path`` in a stable (sorted) order."""
    path = Path(data_path).expanduser()
    if not path.exists():
        raise DataError(
            f"data_path: '{path}' does not exist; point it to a CSV/Parquet file or folder"
        )
    if path.is_file():
        if table_suffix(path) is None:
            raise DataError(
                f"data_path: '{path}' is not a table file; allowed suffixes: {', '.join(TABLE_SUFFIXES)}"
            )
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and table_suffix(p) is not None)
    if not files:
        raise DataError(
            f"data_path: folder '{path}' holds no {'/'.join(TABLE_SUFFIXES)} files; "
            f"put one file per symbol (or one long table with a symbol column) there"
        )
    return files


def read_table(path: Path) -> pd.DataFrame:
    """Read a file with symbol codes kept as text (so '000001' keeps its zeros)."""
    suffix = table_suffix(path)
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            symbol_col = find_symbol_column(list(frame.columns))
            if symbol_col is not None:
                frame[symbol_col] = frame[symbol_col].astype(str)
            return frame
        header = pd.read_csv(path, nrows=0)
        symbol_col = find_symbol_column(list(header.columns))
        dtype = {symbol_col: str} if symbol_col is not None else None
        return pd.read_csv(path, dtype=dtype, skipinitialspace=True)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as {suffix} ({first})") from None


def select_symbols(instruments: str) -> list[str] | None:
    """``all`` means every symbol; otherwise a comma-separated list."""
    text = str(instruments).strip()
    if text.lower() == "all":
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise DataError("instruments: empty; use 'all' or a comma-separated list of symbols")
    return names


def _matches(wanted: list[str] | None, symbol: str) -> bool:
    return wanted is None or symbol in wanted or symbol.lower() in {w.lower() for w in wanted}


def iter_table_frames(
    data_path: str | Path, instruments: str = "all"
) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """Yield ``(symbol, raw frame, origin)``; raw frames carry the 1-based data row in ``_row``."""
    wanted = select_symbols(instruments)
    seen: dict[str, str] = {}
    for path in list_table_files(data_path):
        origin = str(path)
        stem = symbol_from_path(path)
        frame: pd.DataFrame | None = None
        if table_suffix(path) in (".parquet", ".pq"):
            frame = read_table(path)
            symbol_col = find_symbol_column(list(frame.columns))
        else:
            symbol_col = find_symbol_column(list(read_table_header(path)))
        if symbol_col is None and not _matches(wanted, stem):
            continue  # skip reading a file for a symbol that was not asked for
        if frame is None:
            frame = read_table(path)
        frame[ROW] = np.arange(1, len(frame) + 1, dtype=np.int64)
        if symbol_col is None:
            groups = [(stem, frame)]
        else:
            codes = frame[symbol_col]
            blank = np.flatnonzero(codes.isna().to_numpy() | (codes.astype(str).str.strip() == ""))
            if blank.size:
                raise DataError(
                    f"{origin}: row {int(blank[0]) + 1}: empty {symbol_col}; every row of a "
                    f"long table needs a symbol"
                )
            frame[symbol_col] = codes.astype(str).str.strip()
            groups = [
                (str(sym), part.drop(columns=[symbol_col]))
                for sym, part in frame.groupby(symbol_col, sort=True)
            ]
        for symbol, part in groups:
            if not _matches(wanted, symbol):
                continue
            if symbol in seen:
                raise DataError(
                    f"{origin}: symbol {symbol} is also in {seen[symbol]}; each symbol must come "
                    f"from one file"
                )
            seen[symbol] = origin
            yield symbol, part.reset_index(drop=True), origin
    if wanted is not None:
        found = {s.lower() for s in seen}
        missing = [w for w in wanted if w.lower() not in found]
        if missing:
            raise DataError(
                f"instruments: symbol(s) {', '.join(missing)} not found under data_path "
                f"'{data_path}' (found {len(seen)} of the requested ones); symbols are file "
                f"stems or values of a symbol/instrument/code/ticker column"
            )


def read_table_header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as CSV ({first})") from None
