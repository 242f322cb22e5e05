"""K-line data pipeline: sources (demo, CSV/Parquet, Qlib) -> clean frames -> leak-free windows.

The engine codes against the names exported here; see ``spec.py`` for ``DataSpec`` (the keys a
build reads), ``build.py`` for the entry point and ``cleaning.py`` / ``splits.py`` for the
repair policies and the split/overlap rules.
"""

from kronos_engine.data.build import (
    DataSplits,
    LoadReport,
    build_datasets,
    iter_clean_frames,
    load_frames,
)
from kronos_engine.data.demo import generate_demo_frames
from kronos_engine.data.features import FEATURES, TIME_FEATURES
from kronos_engine.data.qlib_writer import write_qlib_provider
from kronos_engine.data.sampler import WindowSampler
from kronos_engine.data.schema import parse_freq
from kronos_engine.data.spec import DataSpec, as_data_spec
from kronos_engine.data.windows import KlineWindowDataset, WindowStore, collate_windows
from kronos_engine.errors import DataError

__all__ = [
    "FEATURES",
    "TIME_FEATURES",
    "DataError",
    "DataSpec",
    "DataSplits",
    "KlineWindowDataset",
    "LoadReport",
    "WindowSampler",
    "WindowStore",
    "as_data_spec",
    "build_datasets",
    "collate_windows",
    "generate_demo_frames",
    "iter_clean_frames",
    "load_frames",
    "parse_freq",
    "write_qlib_provider",
]
