"""K-line data pipeline: sources (demo, CSV/Parquet, Qlib) -> clean frames -> leak-free windows.

The engine codes against the names exported here; see ``spec.py`` for ``DataSpec`` (the keys a
build reads), ``build.py`` for the entry point and ``cleaning.py`` / ``splits.py`` for the
repair policies and the split/overlap rules, ``prepare.py`` / ``store.py`` for the
memory-mapped store every process of a machine shares.
"""

from kronos_engine.data.build import DataSplits, LoadReport, iter_clean_frames, load_frames
from kronos_engine.data.demo import generate_demo_frames
from kronos_engine.data.features import FEATURES, TIME_FEATURES
from kronos_engine.data.prepare import PreparedStore, build_datasets, open_splits, prepare_store
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
    "PreparedStore",
    "WindowSampler",
    "WindowStore",
    "as_data_spec",
    "build_datasets",
    "collate_windows",
    "generate_demo_frames",
    "iter_clean_frames",
    "load_frames",
    "open_splits",
    "parse_freq",
    "prepare_store",
    "write_qlib_provider",
]
