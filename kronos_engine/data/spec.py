"""``DataSpec``: the settings the data build reads, and nothing else.

Training, ``scripts/predict.py`` and ``scripts/evaluate.py`` all describe the bars they want
with a ``DataSpec``. It is picked by name from any mapping of config keys (a training config as
``dataclasses.asdict(cfg)``, or a finished run's ``config.yaml``), so the data package needs
no training config and a run's recorded settings are read as they were written. The field
names and defaults are those of the training config's keys of the same name (a test keeps
them in step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """Where the bars come from, how they are cleaned, split and cut into windows."""

    # --- the source ---
    data_source: str = "auto"  # told by data_path (`sources.settle_data_source`)
    data_path: str | None = None
    instruments: str = "all"
    freq: str = "auto"
    qlib_region: str = "cn"
    demo_symbols: int = 4
    demo_length: int = 800
    seed: int = 100  # seeds the demo data
    # --- market sources (sina, ccxt): fetched into data_path, then read like csv ---
    sina_url: str = "https://quotes.sina.cn/cn/api/jsonp_v2.php/=/CN_MarketDataService.getKLineData"
    exchange: str | None = None
    exchange_api_url: str | None = None
    fetch_since: str | None = None
    fetch_timeout: float = 15.0
    fetch_retries: int = 5
    fetch_backoff: float = 1.0
    fetch_interval: float = 0.5
    # --- cleaning and time limits ---
    bad_data: str = "error"
    dataset_begin_time: str | None = None
    dataset_end_time: str | None = None
    # --- splits ---
    train_time_range: list[str] | None = None
    val_time_range: list[str] | None = None
    test_time_range: list[str] | None = None
    split_ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    # --- windows ---
    lookback_window: int = 90
    predict_window: int = 10
    clip: float = 5.0
    # --- processed splits reused between runs ---
    cache_dir: str | None = None

    @property
    def window_len(self) -> int:
        return self.lookback_window + self.predict_window + 1

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The config keys a spec reads, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DataSpec:
        """The spec's keys picked by name from ``values``; other keys are ignored and missing
        ones keep their defaults. Lists are copied, so the spec never shares the caller's."""
        picked = {}
        for name in cls.keys():
            if name in values:
                value = values[name]
                picked[name] = list(value) if isinstance(value, (list, tuple)) else value
        return cls(**picked)

    def replace(self, **changes: Any) -> DataSpec:
        """A copy with ``changes`` (spec keys only)."""
        return dataclasses.replace(self, **changes)


def as_data_spec(obj: Any) -> DataSpec:
    """``obj`` as a ``DataSpec``: a spec as is, a mapping by its keys, any other object (a
    training config) by its attributes of the spec's names."""
    if isinstance(obj, DataSpec):
        return obj
    if isinstance(obj, Mapping):
        return DataSpec.from_mapping(obj)
    return DataSpec.from_mapping({k: getattr(obj, k) for k in DataSpec.keys() if hasattr(obj, k)})
