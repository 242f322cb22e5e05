"""Write K-line frames as a Qlib provider folder, in qlib's documented binary layout.

Layout written (``freq`` is ``day`` or ``<N>min``)::

    calendars/<freq>.txt                 one timestamp per line, the union of all symbols
    instruments/all.txt                  SYMBOL<TAB>first<TAB>last
    instruments/<universe>.txt           optional named subsets, same format
    features/<symbol lower>/<field>.<freq>.bin
                                         little-endian float32; element 0 is the index of the
                                         symbol's first bar in the calendar, then one value per
                                         calendar slot from first to last (NaN where untraded)

This is what qlib's ``scripts/dump_bin.py`` produces, so users with CSVs get a dataset that
pyqlib (and this pipeline's qlib source) can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_engine.data.features import FEATURES
from kronos_engine.data.parsing import RowLocator, parse_numbers, parse_timestamps
from kronos_engine.data.schema import ROW, TIMESTAMP, canonical_columns, parse_freq
from kronos_engine.errors import DataError

_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-^=]*$")
_DAY_NS = 86_400 * 1_000_000_000


def _prepare(symbol: str, frame: pd.DataFrame, day: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, unique naive-ns stamps and float64 (n, 6) values of one frame."""
    origin = "write_qlib_provider"
    canon = canonical_columns(frame, origin, symbol)
    where = RowLocator(origin, symbol, canon[ROW].to_numpy(), None, True)
    ns = parse_timestamps(canon[TIMESTAMP], where)
    where.ns = ns
    values = np.full((len(canon), len(FEATURES)), np.nan)
    for k, name in enumerate(FEATURES):
        if name in canon.columns:
            values[:, k] = parse_numbers(canon[name], name, where)
    if "amount" not in canon.columns or np.all(np.isnan(values[:, 5])):
        values[:, 5] = values[:, :4].mean(axis=1) * values[:, 4]
    order = np.argsort(ns, kind="stable")
    ns, values = ns[order], values[order]
    where.rows, where.ns = canon[ROW].to_numpy()[order], ns
    dup = np.flatnonzero(ns[1:] == ns[:-1])
    if dup.size:
        raise DataError(
            f"{where(int(dup[0]) + 1)}: duplicate timestamp; a provider holds one bar per "
            f"timestamp and symbol (clean the frame first)"
        )
    if day and np.any(ns % _DAY_NS):
        i = int(np.flatnonzero(ns % _DAY_NS)[0])
        raise DataError(
            f"{where(i)}: has a time of day but freq is 'day'; pass an intraday freq such as "
            f"'1min'/'60min', or normalise the timestamps to dates"
        )
    return ns, values


def write_qlib_provider(
    frames: Mapping[str, pd.DataFrame],
    provider_dir: str | Path,
    freq: str = "day",
    universes: Mapping[str, Iterable[str]] | None = None,
) -> Path:
    """Write ``frames`` (symbol -> OHLCV[A] frame, any accepted column spelling) for ``freq``.

    Rewrites this freq's calendar, ``instruments/all.txt`` and the listed symbols' feature
    files; other frequencies already in ``provider_dir`` are left alone. ``amount`` is derived
    as ``mean(o, h, l, c) * volume`` when absent. Returns the provider path.
    """
    qfreq = parse_freq(freq)
    if not frames:
        raise DataError("write_qlib_provider: no frames given")
    root = Path(provider_dir).expanduser()
    day = not qfreq.intraday
    prepared: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symbol, frame in frames.items():
        symbol = str(symbol)
        if not _SYMBOL_RE.match(symbol):
            raise DataError(
                f"write_qlib_provider: symbol {symbol!r} cannot name a folder; allowed: letters, "
                f"digits and . _ - ^ = (not starting with punctuation)"
            )
        if symbol.lower() in {s.lower() for s in prepared}:
            raise DataError(f"write_qlib_provider: symbol {symbol} given twice (qlib ignores case)")
        ns, values = _prepare(symbol, frame, day)
        if len(ns) == 0:
            raise DataError(f"write_qlib_provider: symbol {symbol} has no rows")
        prepared[symbol] = (ns, values)

    calendar = np.unique(np.concatenate([ns for ns, _ in prepared.values()]))
    stamps = pd.DatetimeIndex(calendar.astype("datetime64[ns]"))
    fmt = "%Y-%m-%d" if day else "%Y-%m-%d %H:%M:%S"
    text = stamps.strftime(fmt)
    for sub in ("calendars", "instruments", "features"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "calendars" / f"{qfreq.name}.txt").write_text("\n".join(text) + "\n")

    spans: dict[str, str] = {}
    for symbol, (ns, values) in prepared.items():
        index = np.searchsorted(calendar, ns)
        first, last = int(index[0]), int(index[-1])
        folder = root / "features" / symbol.lower()
        folder.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(FEATURES):
            column = np.full(last - first + 1, np.nan, dtype="<f4")
            column[index - first] = values[:, k]
            payload = np.concatenate([np.array([first], dtype="<f4"), column])
            payload.astype("<f4").tofile(folder / f"{name}.{qfreq.name}.bin")
        spans[symbol] = f"{symbol}\t{text[first]}\t{text[last]}"

    (root / "instruments" / "all.txt").write_text("\n".join(spans.values()) + "\n")
    for name, members in (universes or {}).items():
        if not _SYMBOL_RE.match(str(name)):
            raise DataError(f"write_qlib_provider: universe name {name!r} cannot name a file")
        members = [str(m) for m in members]
        unknown = [m for m in members if m not in spans]
        if unknown:
            raise DataError(
                f"write_qlib_provider: universe {name} lists unknown symbol(s) {', '.join(unknown)}"
            )
        lines = [spans[m] for m in members]
        (root / "instruments" / f"{str(name).lower()}.txt").write_text("\n".join(lines) + "\n")
    return root
