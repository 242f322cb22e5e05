"""Qlib provider source, read through pyqlib itself, one instrument at a time.

The public preprocessing loads the whole universe into one frame and reshapes it with
``stack().unstack()``, which stalls on large universes; here memory is bounded by the
largest single instrument. Qlib is initialised with caches off and one kernel so reads are
deterministic and cheap on small machines, and re-initialised on every load so several
providers can be read in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_engine.data.schema import Freq, parse_freq
from kronos_engine.errors import DataError

QLIB_REGIONS: tuple[str, ...] = ("cn", "us", "tw")
_FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def _build_hint(provider: Path, freq: Freq) -> str:
    return (
        f"build one from CSV/DataFrames with kronos_engine.data.write_qlib_provider(frames, "
        f"'{provider}', '{freq.name}') or with qlib's scripts/dump_bin.py"
    )


def universe_file(provider: Path, instruments: str) -> Path | None:
    """``instruments/<name>.txt`` when ``instruments`` names a universe rather than symbols."""
    name = str(instruments).strip()
    if "," in name or not name:
        return None
    path = provider / "instruments" / f"{name.lower()}.txt"
    return path if path.is_file() else None


def check_provider(provider: Path, freq: Freq, instruments: str) -> None:
    """Raise one line naming every missing piece of the provider layout and how to build it."""
    if not provider.is_dir():
        raise DataError(
            f"data_path: qlib provider folder '{provider}' does not exist; {_build_hint(provider, freq)}"
        )
    missing = []
    calendar = provider / "calendars" / f"{freq.name}.txt"
    if not calendar.is_file():
        missing.append(f"calendars/{freq.name}.txt")
    if not (provider / "features").is_dir():
        missing.append("features/")
    name = str(instruments).strip()
    if "," not in name and universe_file(provider, name) is None:
        if not (provider / "instruments").is_dir():
            missing.append("instruments/")
        elif name.lower() == "all" or not (provider / "features" / name.lower()).is_dir():
            missing.append(f"instruments/{name.lower()}.txt")
    if missing:
        raise DataError(
            f"data_path: qlib provider '{provider}' is missing {', '.join(missing)} "
            f"(freq {freq.name}); {_build_hint(provider, freq)}"
        )
    check_calendar(calendar)


def check_calendar(calendar: Path) -> None:
    """Every calendar line is a date/datetime (pyqlib would fail on it with a traceback)."""
    lines = calendar.read_text(encoding="utf-8", errors="replace").splitlines()
    text = pd.Series([line.strip() for line in lines])
    text = text[text != ""]
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        line = int(text.index[bad[0]]) + 1
        raise DataError(
            f"{calendar}:{line}: calendar entry {text.iloc[bad[0]]!r} is not a date "
            f"({bad.size} such line(s)); allowed: one date or datetime per line, e.g. 2020-01-02"
        )
    if not parsed.is_monotonic_increasing or parsed.duplicated().any():
        i = int(np.flatnonzero(np.diff(parsed.to_numpy().astype("int64")) <= 0)[0]) + 1
        raise DataError(
            f"{calendar}:{int(text.index[i]) + 1}: calendar entry {text.iloc[i]!r} is not after "
            f"the previous one; allowed: strictly increasing dates"
        )


def check_feature_file(path: Path) -> None:
    """A Qlib ``.bin`` is float32 little-endian: a start index, then one value per slot."""
    size = path.stat().st_size
    if size < 4 or size % 4:
        raise DataError(
            f"{path}: {size} bytes is not a Qlib feature file (allowed: a 4-byte start index "
            f"plus 4 bytes per value, a multiple of 4); rewrite it, e.g. with "
            f"write_qlib_provider or qlib's dump_bin.py"
        )


QLIB_MISSING = (
    "data_source: 'qlib' needs pyqlib, which is not installed; install the Qlib extra with "
    "pip install -e '.[qlib]' (or pip install pyqlib)"
)


def require_pyqlib() -> None:
    """pyqlib is an optional extra: one line instead of a ModuleNotFoundError traceback."""
    import importlib.util

    if importlib.util.find_spec("qlib") is None:
        raise DataError(QLIB_MISSING)


def init_qlib(provider: Path, region: str) -> None:
    """(Re)initialise qlib for ``provider``: no disk caches, one kernel, quiet logs."""
    if region not in QLIB_REGIONS:
        raise DataError(
            f"qlib_region: '{region}' is not allowed; choose one of {list(QLIB_REGIONS)}"
        )
    require_pyqlib()
    import qlib

    qlib.init(
        provider_uri=str(provider),
        region=region,
        kernels=1,
        joblib_backend="sequential",
        expression_cache=None,
        dataset_cache=None,
        clear_mem_cache=True,
        skip_if_reg=False,
        logging_level=logging.WARNING,
    )


def resolve_instruments(
    provider: Path,
    instruments: str,
    freq: Freq,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> list[str]:
    """Symbols of a universe (alive in ``[start, end]``) or of an explicit list."""
    from qlib.data import D

    if universe_file(provider, instruments) is not None:
        universe = D.instruments(str(instruments).strip().lower())
        names = D.list_instruments(
            universe, start_time=start, end_time=end, freq=freq.name, as_list=True
        )
        return sorted(str(n) for n in names)
    names = [s.strip() for s in str(instruments).split(",") if s.strip()]
    absent = [n for n in names if not (provider / "features" / n.lower()).is_dir()]
    if absent:
        raise DataError(
            f"instruments: symbol(s) {', '.join(absent)} have no features/<symbol lowercase>/ "
            f"folder in qlib provider '{provider}'; use a universe name from instruments/ or "
            f"symbols that were written there"
        )
    return names


def iter_qlib_frames(
    provider: str | Path,
    instruments: str,
    freq: str,
    region: str = "cn",
    bounds: tuple[int | None, int | None] = (None, None),
) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """Yield ``(symbol, raw frame, origin)`` per instrument via ``qlib.data.D.features``.

    ``amount`` is read from ``$amount`` when the instrument has that field and otherwise
    derived downstream as ``mean(open, high, low, close) * volume``.
    """
    path = Path(provider).expanduser().resolve()
    qfreq = parse_freq(freq)
    check_provider(path, qfreq, instruments)
    init_qlib(path, region)
    from qlib.data import D

    lo, hi = bounds
    start = pd.Timestamp(lo) if lo is not None else None
    end = pd.Timestamp(hi - 1) if hi is not None else None
    for symbol in resolve_instruments(path, instruments, qfreq, start, end):
        folder = path / "features" / symbol.lower()
        fields = list(_FIELDS)
        if (folder / f"amount.{qfreq.name}.bin").is_file():
            fields.append("amount")
        absent = [f for f in _FIELDS if not (folder / f"{f}.{qfreq.name}.bin").is_file()]
        origin = f"qlib:{path}"
        if absent:
            raise DataError(
                f"{origin}: symbol {symbol}: missing feature file(s) "
                f"{', '.join(f'features/{symbol.lower()}/{f}.{qfreq.name}.bin' for f in absent)}"
            )
        for f in fields:
            check_feature_file(folder / f"{f}.{qfreq.name}.bin")
        try:
            frame = D.features(
                [symbol], [f"${f}" for f in fields], start_time=start, end_time=end, freq=qfreq.name
            )
        except Exception as exc:  # noqa: BLE001 - pyqlib's traceback would not name the files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{origin}: symbol {symbol}: pyqlib cannot read features/{symbol.lower()}/ "
                f"({type(exc).__name__}: {first}); check its .bin files and the calendar"
            ) from None
        stamps = frame.index.get_level_values("datetime") if len(frame) else pd.DatetimeIndex([])
        raw = pd.DataFrame({"timestamps": np.asarray(stamps, dtype="datetime64[ns]")})
        for f in fields:
            raw[f] = frame[f"${f}"].to_numpy(dtype=np.float64) if len(frame) else np.empty(0)
        yield symbol, raw, origin
