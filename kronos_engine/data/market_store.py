"""The market store: a local folder of one CSV file per symbol that grows with every fetch.

Services such as Sina's K-line API keep only a limited minute history, so the local folder is
where history accumulates. Merging a fetch into what is stored follows one rule:

* bars at new timestamps are added, and every stored bar the fetch does not mention is kept
  (older bars are never lost, also when the service no longer serves them);
* a bar at a stored timestamp with the same values is a duplicate and changes nothing;
* a bar at a stored timestamp with different values replaces the stored one: the newest
  answer wins. That is how the unfinished last bar of an earlier fetch (fetched during the
  session) becomes the finished bar, and how a service's later correction arrives. Each such
  replacement is counted and logged with its first timestamp.

A file is rewritten only when the merge changed something, and always atomically
(`fsio.atomic_save`: a reader, or a kill, sees the old file or the new one). The columns are
``timestamps, open, high, low, close, volume`` (+ ``amount`` when the service gives it for every
bar) and, when the file name is not the symbol itself (``BTC/USDT`` is stored as
``BTC_USDT.csv``), a ``symbol`` column, which the CSV reader takes as the symbol.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_engine.errors import DataError
from kronos_engine.fsio import atomic_save

log = logging.getLogger("kronos_engine.data")

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
BAR_COLUMNS: tuple[str, ...] = ("timestamps", *PRICE_COLUMNS)
OPTIONAL_COLUMNS: tuple[str, ...] = ("amount", "symbol")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_name(symbol: str) -> str:
    """A safe file name for ``symbol``: characters other than letters, digits, ``.``, ``_``
    and ``-`` become ``_`` (``BTC/USDT`` -> ``BTC_USDT.csv``)."""
    stem = _UNSAFE.sub("_", symbol.strip())
    if not stem or stem.startswith("."):
        raise DataError(f"instruments: '{symbol}' cannot name a file in the market folder")
    return f"{stem}.csv"


def check_file_names(symbols: list[str]) -> None:
    """Two symbols that would share one file (``BTC/USDT`` and ``BTC_USDT``) stop here."""
    seen: dict[str, str] = {}
    for symbol in symbols:
        name = file_name(symbol).lower()
        if name in seen and seen[name] != symbol:
            raise DataError(
                f"instruments: '{seen[name]}' and '{symbol}' would both be stored as {name}; "
                f"fetch them into different data_path folders"
            )
        seen[name] = symbol


def bars_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Fetched bars (dicts with a pandas ``timestamps`` and float prices) as a sorted frame
    with one bar per timestamp (a service repeating a bar in one answer: the later one)."""
    frame = pd.DataFrame(rows, columns=[*BAR_COLUMNS, *(["amount"] if _has_amount(rows) else [])])
    frame["timestamps"] = pd.to_datetime(frame["timestamps"])
    for column in frame.columns[1:]:
        frame[column] = frame[column].astype(np.float64)
    frame = frame.drop_duplicates("timestamps", keep="last")
    return frame.sort_values("timestamps", kind="stable").reset_index(drop=True)


def _has_amount(rows: list[dict[str, object]]) -> bool:
    return bool(rows) and all(row.get("amount") is not None for row in rows)


@dataclass
class MergeReport:
    """What merging one fetch into a symbol's file did."""

    symbol: str
    path: Path
    stored: int = 0  # bars in the file before
    fetched: int = 0  # bars in the answer
    added: int = 0  # new timestamps
    duplicates: int = 0  # same timestamp, same values
    replaced: int = 0  # same timestamp, other values: the fetch won
    first_replaced: str | None = None
    written: bool = False

    @property
    def total(self) -> int:
        return self.stored + self.added

    def describe(self) -> str:
        text = (
            f"{self.symbol}: {self.fetched} bars fetched, {self.added} new, {self.duplicates} "
            f"already stored, {self.replaced} replaced by newer values; {self.total} bars in "
            f"{self.path}"
        )
        if self.replaced:
            text += f" (first replaced bar: {self.first_replaced})"
        return text


class MarketStore:
    """One symbol per file under ``folder``; see the module docstring for the merge rule."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"data_path: '{self.folder}' is a file; the market store is a folder")

    def path_of(self, symbol: str) -> Path:
        return self.folder / file_name(symbol)

    def read(self, symbol: str) -> pd.DataFrame | None:
        """The stored bars of ``symbol`` (None when it has no file yet); a file that is not
        what the store writes is an error naming it, and is never rewritten."""
        path = self.path_of(symbol)
        if not path.exists():
            return None
        try:
            frame = pd.read_csv(path, dtype={"symbol": str})
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{path}: cannot be read as the stored bars of {symbol} ({first})"
            ) from None
        columns = list(frame.columns)
        missing = [c for c in BAR_COLUMNS if c not in columns]
        extra = [c for c in columns if c not in BAR_COLUMNS + OPTIONAL_COLUMNS]
        if missing or extra:
            raise DataError(
                f"{path}: not a market-store file (missing {missing or 'nothing'}, unexpected "
                f"{extra or 'nothing'}); it holds columns {', '.join(BAR_COLUMNS)}[, amount]; "
                f"move the file away or use another data_path"
            )
        if "symbol" in columns and not (frame["symbol"] == symbol).all():
            other = frame.loc[frame["symbol"] != symbol, "symbol"].iloc[0]
            raise DataError(f"{path}: holds symbol '{other}', not '{symbol}'")
        try:
            frame["timestamps"] = pd.to_datetime(frame["timestamps"], format="ISO8601")
            for column in [c for c in columns if c not in ("timestamps", "symbol")]:
                frame[column] = pd.to_numeric(frame[column]).astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: a stored bar cannot be read ({exc})") from None
        frame = frame.drop(columns=["symbol"], errors="ignore")
        return frame.sort_values("timestamps", kind="stable").reset_index(drop=True)

    def merge(
        self, symbol: str, stored: pd.DataFrame | None, fetched: pd.DataFrame
    ) -> tuple[pd.DataFrame, MergeReport]:
        """The ``stored`` bars (`read`) grown by ``fetched`` (`bars_frame`), and what changed."""
        report = MergeReport(symbol, self.path_of(symbol), fetched=len(fetched))
        if stored is None or stored.empty:
            report.added = len(fetched)
            return fetched.reset_index(drop=True), report
        report.stored = len(stored)
        columns = [c for c in stored.columns if c != "timestamps"]
        if "amount" in columns and "amount" not in fetched.columns:
            fetched = fetched.assign(amount=np.nan)
        if "amount" in fetched.columns and "amount" not in columns:
            fetched = fetched.drop(columns=["amount"])
        stored_ts = stored["timestamps"].to_numpy()
        fetched_ts = fetched["timestamps"].to_numpy()
        known = np.isin(fetched_ts, stored_ts)
        report.added = int((~known).sum())
        if known.any():
            old = stored.set_index("timestamps").loc[fetched_ts[known], columns].to_numpy()
            new = fetched.loc[known, columns].to_numpy()
            same = (old == new) | (np.isnan(old) & np.isnan(new))
            differs = ~same.all(axis=1)
            report.duplicates = int((~differs).sum())
            report.replaced = int(differs.sum())
            if report.replaced:
                report.first_replaced = str(pd.Timestamp(fetched_ts[known][differs][0]))
        kept = stored[~np.isin(stored_ts, fetched_ts)]
        merged = pd.concat([kept, fetched[["timestamps", *columns]]], ignore_index=True)
        merged = merged.sort_values("timestamps", kind="stable").reset_index(drop=True)
        if "amount" in merged.columns and merged["amount"].isna().any():
            log.warning(
                "%s: amount dropped: the service gave it for some bars only; it is derived "
                "from prices and volume instead",
                symbol,
            )
            merged = merged.drop(columns=["amount"])
        return merged, report

    def write(self, symbol: str, frame: pd.DataFrame, report: MergeReport) -> MergeReport:
        """Replace ``symbol``'s file atomically with ``frame`` when the merge changed it."""
        if not report.added and not report.replaced:
            return report  # nothing new: the stored file stays byte-identical
        out = frame.copy()
        path = self.path_of(symbol)
        if path.name != f"{symbol}.csv":  # the file name alone does not say the symbol
            out["symbol"] = symbol
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda tmp: out.to_csv(tmp, index=False))
        report.written = True
        if report.replaced:
            log.warning(
                "%s: %d stored bar(s) replaced by the service's newer values (first at %s)",
                symbol,
                report.replaced,
                report.first_replaced,
            )
        return report

    def grow(self, symbol: str, fetched: pd.DataFrame) -> MergeReport:
        """Merge and write in one step."""
        merged, report = self.merge(symbol, self.read(symbol), fetched)
        return self.write(symbol, merged, report)
