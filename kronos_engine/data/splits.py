"""Per-symbol train/val/test row segments, by time ranges or by ratios.

A window "predicts" its rows after the lookback. A split's windows are exactly the windows
whose predicted rows (``lookback + 1 .. T``) lie inside the split; their lookback may reach up
to ``lookback`` rows before the split starts. So each split's row segment is the split's rows
plus the ``lookback`` rows just before it: val/test overlap the previous split by ``lookback``
rows (as in the public config, where val/test ranges start before the train range ends), and
the first val window has its full history while no val/test target row is ever a train row.

* Time ranges: ``train_time_range``/``val_time_range`` (and optional ``test_time_range``) are
  ``[start, end]``; a date-only end includes that whole day. Ranges should not overlap (the
  lookback overlap is added automatically); overlapping ranges are allowed but logged.
* Ratios: each symbol's rows are cut at ``round(n * train)`` and ``round(n * (train + val))``;
  with a zero test ratio val takes the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from kronos_engine.data.timeutil import time_bounds
from kronos_engine.errors import DataError

log = logging.getLogger("kronos_engine.data")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPlan:
    """How to cut every symbol; ``bounds`` are ``(lo_ns, hi_ns_exclusive)`` per split."""

    mode: str  # "time_ranges" | "ratios"
    names: tuple[str, ...]  # splits that exist ("test" may be absent)
    bounds: dict[str, tuple[int | None, int | None]]
    ratios: tuple[float, float, float]
    ranges: dict[str, list[str] | None]

    def describe(self) -> dict:
        if self.mode == "ratios":
            return {"mode": "ratios", "split_ratios": list(self.ratios)}
        return {"mode": "time_ranges", **{f"{k}_time_range": v for k, v in self.ranges.items()}}


def _finite(bounds: tuple[int | None, int | None]) -> tuple[float, float]:
    lo, hi = bounds
    return (-np.inf if lo is None else lo, np.inf if hi is None else hi)


def make_plan(
    train_range: list[str] | None,
    val_range: list[str] | None,
    test_range: list[str] | None,
    ratios: list[float] | tuple[float, ...],
) -> SplitPlan:
    ranges = {"train": train_range, "val": val_range, "test": test_range}
    ratio_tuple = tuple(float(r) for r in ratios)
    if any(r is not None for r in ranges.values()):
        for name in ("train", "val"):
            if ranges[name] is None:
                raise DataError(
                    f"{name}_time_range: required when splitting by time (train_time_range and "
                    f"val_time_range are both needed; test_time_range is optional), or set all "
                    f"three to null to split by split_ratios"
                )
        bounds = {}
        for name, value in ranges.items():
            if value is None:
                continue
            if len(value) != 2:
                raise DataError(f"{name}_time_range: must be [start, end], got {value}")
            bounds[name] = time_bounds(value[0], value[1], f"{name}_time_range")
        names = tuple(n for n in SPLITS if n in bounds)
        for a, b in zip(names, names[1:]):
            lo_a, hi_a = _finite(bounds[a])
            lo_b, hi_b = _finite(bounds[b])
            if lo_b < hi_a and lo_a < hi_b:
                log.warning(
                    "%s_time_range %s overlaps %s_time_range %s: windows predicting the overlap "
                    "are in both splits (the lookback overlap is added automatically, so ranges "
                    "need not overlap)",
                    a,
                    ranges[a],
                    b,
                    ranges[b],
                )
        return SplitPlan("time_ranges", names, bounds, ratio_tuple, ranges)
    if len(ratio_tuple) != 3 or any(r < 0 for r in ratio_tuple) or abs(sum(ratio_tuple) - 1) > 1e-6:
        raise DataError(
            f"split_ratios: must be three non-negative numbers summing to 1, got {ratios}"
        )
    names = ("train", "val", "test") if ratio_tuple[2] > 0 else ("train", "val")
    return SplitPlan("ratios", names, {}, ratio_tuple, ranges)


def segments_for(plan: SplitPlan, ns: np.ndarray, lookback: int) -> dict[str, tuple[int, int]]:
    """Row ``[start, end)`` of each split for one symbol with sorted stamps ``ns``."""
    n = len(ns)
    out: dict[str, tuple[int, int]] = {}
    if plan.mode == "ratios":
        r_train, r_val, _ = plan.ratios
        cut1 = int(round(n * r_train))
        cut2 = n if "test" not in plan.names else min(n, int(round(n * (r_train + r_val))))
        targets = {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n)}
    else:
        targets = {}
        for name in plan.names:
            lo, hi = plan.bounds[name]
            first = 0 if lo is None else int(np.searchsorted(ns, lo, side="left"))
            last = n if hi is None else int(np.searchsorted(ns, hi, side="left"))
            targets[name] = (first, max(first, last))
    for name in plan.names:
        first, last = targets[name]
        out[name] = (max(0, first - lookback), last) if last > first else (first, first)
    return out
