"""`freq: auto` (the default): the bar length read from the data instead of a flag.

A symbol's bar length is the most common spacing between two bars of one day (lunch breaks,
nights and missing bars are rarer spacings), or `day` when no day has two bars. Every symbol
of a run must have the same one; the run records what was found (`config.yaml`, the data
summary) so forecasting and evaluation read the bars as training did. A Qlib provider says its
frequency by its calendar file (`calendars/<freq>.txt`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kronos_engine.data.schema import Freq, parse_freq
from kronos_engine.data.spec import DataSpec
from kronos_engine.errors import DataError

AUTO = "auto"
_DAY_NS = 86_400 * 1_000_000_000
_MINUTE_NS = 60 * 1_000_000_000


def is_auto(freq: object) -> bool:
    return isinstance(freq, str) and freq.strip().lower() == AUTO


def freq_name(freq: str) -> str:
    """The canonical spelling of a configured `freq` (`auto` stays `auto`)."""
    return AUTO if is_auto(freq) else parse_freq(freq).name


def most_common_gap(ns: np.ndarray) -> int | None:
    """The most common positive spacing (ns) of two bars of one day in sorted naive int64 ns
    stamps (ties: the shortest), or None when no day has two bars."""
    same_day = (ns[1:] // _DAY_NS) == (ns[:-1] // _DAY_NS)
    gaps = np.diff(ns)[same_day]
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


def detect_freq(ns: np.ndarray, where: str) -> Freq:
    """The bar length of one symbol's sorted naive timestamps (int64 ns)."""
    gap = most_common_gap(ns)
    if gap is None:
        return Freq("day", None)
    if gap % _MINUTE_NS:
        raise DataError(
            f"{where}: bars {gap / 1e9:g} s apart most often; freq: auto reads bar lengths of "
            f"whole minutes or days; set freq explicitly or resample the bars"
        )
    return parse_freq(f"{gap // _MINUTE_NS}min")


class FreqAgreement:
    """The bar length found so far, and the first symbol it was found in: a symbol of another
    length stops the run, naming both."""

    def __init__(self) -> None:
        self.freq: Freq | None = None
        self.symbol: str | None = None

    def add(self, symbol: str, freq: Freq, origin: str) -> None:
        if self.freq is None:
            self.freq, self.symbol = freq, symbol
        elif freq != self.freq:
            raise DataError(
                f"{origin}: symbol {symbol} has {freq.name} bars but symbol {self.symbol} has "
                f"{self.freq.name} bars (freq: auto); allowed: one bar length per run (set freq "
                f"and list the symbols of that length in instruments, or split the data)"
            )


def provider_freq(provider: str | Path) -> str:
    """`freq: auto` for a Qlib provider: the frequency of its only calendar file."""
    folder = Path(provider).expanduser() / "calendars"
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    if len(names) == 1:
        return parse_freq(names[0]).name
    if not names:
        return "day"  # not a provider: reading it says what is missing (`sources_qlib`)
    raise DataError(
        f"freq: auto cannot choose between the calendars {names} of {folder.parent}; set freq "
        f"to one of them"
    )


def settle_source_freq(spec: DataSpec) -> DataSpec:
    """`spec` with `freq: auto` settled where the source says it without reading bars: the
    demo data is daily, a Qlib provider has one calendar. CSV/Parquet stay `auto` (their bars
    are measured while they are cleaned)."""
    if not is_auto(spec.freq):
        return spec
    if spec.data_source == "demo":
        return spec.replace(freq="day")
    if spec.data_source == "qlib" and spec.data_path:
        return spec.replace(freq=provider_freq(spec.data_path))
    return spec
