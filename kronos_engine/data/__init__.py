"""K-line data pipeline: sources (demo, CSV/Parquet, Qlib) -> clean frames -> leak-free windows.

The engine codes against the names exported here; see ``spec.py`` for ``DataSpec`` (the keys a
build reads), ``build.py`` for the entry point and ``cleaning.py`` / ``splits.py`` for the
repair policies and the split/overlap rules.
"""

from .build import DataSplits, LoadReport, build_datasets, iter_clean_frames, load_frames
from .demo import generate_demo_frames
from .errors import DataError
from .qlib_writer import write_qlib_provider
from .sampler import WindowSampler
from .schema import FEATURES, TIME_FEATURES, parse_freq
from .spec import DataSpec, as_data_spec
from .windows import KlineWindowDataset, WindowStore, collate_windows

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
