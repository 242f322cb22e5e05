"""Where forecasts start: the origins of a split.

A split's `WindowStore` holds each symbol's split rows plus the `lookback` rows just before
them. An *origin* is the last observed row of a forecast: the model sees the `lookback` rows
ending at the origin and nothing after it, and is scored on the `pred_len` rows after it, all
of which lie in the split. Origins start at the split's first forecastable row and repeat
every `stride` rows per symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kronos_engine.data.windows import WindowStore


@dataclass(frozen=True)
class Origins:
    """Origins as global row indices into a store, with the symbol index of each."""

    symbol: np.ndarray  # int64 (n,)
    row: np.ndarray  # int64 (n,), the origin row (last observed) in the store's arrays

    def __len__(self) -> int:
        return int(self.row.size)

    def take(self, index: np.ndarray) -> Origins:
        return Origins(self.symbol[index], self.row[index])


def plan_origins(store: WindowStore, lookback: int, pred_len: int, stride: int = 1) -> Origins:
    """Every `stride`-th origin of every symbol whose lookback and horizon fit its segment.

    The first origin is the segment's row `lookback - 1`: its history is exactly the
    `lookback` rows before the split, its targets are the split's first `pred_len` rows.
    """
    if lookback < 2 or pred_len < 1 or stride < 1:
        raise ValueError(
            f"lookback must be >= 2, pred_len and stride >= 1 (got {lookback}, {pred_len}, {stride})"
        )
    symbols, rows = [], []
    for s in range(len(store.symbols)):
        start, end = int(store.row_offsets[s]), int(store.row_offsets[s + 1])
        local = np.arange(lookback - 1, end - start - pred_len, stride, dtype=np.int64)
        symbols.append(np.full(local.size, s, dtype=np.int64))
        rows.append(start + local)
    if not rows:
        return Origins(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Origins(np.concatenate(symbols), np.concatenate(rows))


def subset_by_date(store: WindowStore, origins: Origins, budget: int) -> Origins:
    """At most `budget` origins on evenly spaced dates, keeping every symbol of a chosen date
    (so cross-sectional IC stays defined). Deterministic: same store, same subset."""
    if len(origins) <= budget:
        return origins
    stamps = store.stamps[origins.row]
    dates, counts = np.unique(stamps, return_counts=True)
    per_date = len(origins) / len(dates)
    n_dates = int(min(len(dates), max(1, budget // max(1.0, per_date))))
    chosen = dates[np.unique(np.linspace(0, len(dates) - 1, n_dates).round().astype(np.int64))]
    keep = np.flatnonzero(np.isin(stamps, chosen))
    order = np.lexsort((origins.symbol[keep], stamps[keep]))
    return origins.take(keep[order][:budget])
