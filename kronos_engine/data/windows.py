"""Contiguous window storage and the map-style dataset the engine trains on.

One split is stored as a single float32 ``(N_rows, 6)`` array of raw features, one int64
stamp (naive epoch seconds) per row, and per-symbol row / window offsets. A window is every
start position in a symbol's row segment; its start is derived from the offsets
(``row_offsets[s] + i - window_offsets[s]``) instead of being stored, which keeps the dataset
at ~1.33x the raw float32 size. Normalisation and time features are computed per batch with
vectorised numpy, so there is no per-sample pandas and no randomness in ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kronos_engine.data.features import FEATURES, normalise, stamp_seconds, time_features
from kronos_engine.data.schema import TIMESTAMP
from kronos_engine.data.timeutil import NS_PER_SECOND
from kronos_engine.errors import DataError

ARRAY_NAMES: tuple[str, ...] = ("values", "stamps", "row_offsets", "window_offsets")

# NORM_EPS is defined in features.py; cleaning.check_scale still imports it from here.


@dataclass
class WindowStore:
    """The arrays of one split; symbols with no window are never stored."""

    values: np.ndarray  # float32 (N_rows, 6)
    stamps: np.ndarray  # int64 (N_rows,), naive epoch seconds
    symbols: list[str]
    row_offsets: np.ndarray  # int64 (S + 1,)
    window_offsets: np.ndarray  # int64 (S + 1,)
    window_len: int
    # Set when the arrays are memory-mapped from a split folder (data/store.py); `owner` keeps a
    # temporary store's folder alive while any store maps it.
    source: Path | None = field(default=None, compare=False, repr=False)
    owner: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_segments(
        cls, segments: Sequence[tuple[str, np.ndarray, np.ndarray]], window_len: int
    ) -> WindowStore:
        """Concatenate ``(symbol, values (n, 6), stamps_seconds (n,))`` with n >= window_len."""
        kept = [(s, v, t) for s, v, t in segments if len(v) >= window_len]
        lengths = np.array([len(v) for _, v, _ in kept], dtype=np.int64)
        row_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        windows = lengths - window_len + 1
        window_offsets = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
        if kept:
            values = np.concatenate([np.asarray(v, dtype=np.float32) for _, v, _ in kept])
            stamps = np.concatenate([np.asarray(t, dtype=np.int64) for _, _, t in kept])
        else:
            values = np.zeros((0, len(FEATURES)), dtype=np.float32)
            stamps = np.zeros(0, dtype=np.int64)
        return cls(values, stamps, [s for s, _, _ in kept], row_offsets, window_offsets, window_len)

    @property
    def num_windows(self) -> int:
        return int(self.window_offsets[-1])

    @property
    def nbytes(self) -> int:
        arrays = (self.values, self.stamps, self.row_offsets, self.window_offsets)
        return int(sum(a.nbytes for a in arrays))

    def arrays(self) -> dict[str, np.ndarray]:
        """The plain numeric arrays by name (``ARRAY_NAMES``; symbols go to a manifest)."""
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], symbols: list[str], window_len: int
    ) -> WindowStore:
        store = cls(
            np.ascontiguousarray(arrays["values"], dtype=np.float32),
            np.ascontiguousarray(arrays["stamps"], dtype=np.int64),
            list(symbols),
            np.asarray(arrays["row_offsets"], dtype=np.int64),
            np.asarray(arrays["window_offsets"], dtype=np.int64),
            int(window_len),
        )
        store.check()
        return store

    @classmethod
    def map(
        cls, folder: Path, symbols: list[str], window_len: int, owner: Any = None
    ) -> WindowStore:
        """The split in ``folder`` mapped read-only (``<name>.npy`` per array, never pickle):
        no copy, so every process that maps it shares the page cache."""
        arrays = {
            name: np.load(Path(folder) / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            for name in ARRAY_NAMES
        }
        store = cls.from_arrays(arrays, symbols, window_len)
        store.source, store.owner = Path(folder), owner
        return store

    def __getstate__(self) -> dict[str, Any]:
        """A mapped store travels (to a DataLoader worker started with ``spawn``) as its folder,
        mapped again on arrival, never as a copy of its arrays."""
        if self.source is None:
            return {**self.__dict__, "owner": None}
        return {"source": str(self.source), "symbols": self.symbols, "window_len": self.window_len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "values" in state:
            self.__dict__.update(state)
            return
        mapped = WindowStore.map(Path(state["source"]), state["symbols"], state["window_len"])
        self.__dict__.update(mapped.__dict__)

    def check(self) -> None:
        """Cheap consistency checks (a damaged cache must not produce silent garbage)."""
        n_sym = len(self.symbols)
        ok = (
            self.values.ndim == 2
            and self.values.shape[1] == len(FEATURES)
            and self.stamps.shape == (self.values.shape[0],)
            and self.row_offsets.shape == (n_sym + 1,)
            and self.window_offsets.shape == (n_sym + 1,)
            and (n_sym == 0 or int(self.row_offsets[-1]) == self.values.shape[0])
            and np.array_equal(
                np.diff(self.window_offsets), np.diff(self.row_offsets) - self.window_len + 1
            )
        )
        if not ok:
            raise DataError("window store: arrays are inconsistent (damaged cache?)")


class KlineWindowDataset(torch.utils.data.Dataset):
    """Normalised ``(x, stamp)`` windows of ``lookback + predict + 1`` rows.

    Each window is normalised with the mean and population std of its first ``lookback``
    rows only (``features.normalise`` in float64: ``(x - mean) / (std + 1e-5)``, then clipped
    to ``+-clip``), so no value after the lookback can influence the normalised lookback.
    """

    def __init__(self, store: WindowStore, lookback: int, predict: int, clip: float = 5.0):
        if store.window_len != lookback + predict + 1:
            raise DataError(
                f"lookback_window: store windows have {store.window_len} rows but "
                f"lookback + predict + 1 = {lookback + predict + 1}"
            )
        self.store = store
        self.lookback = int(lookback)
        self.predict = int(predict)
        self.clip = float(clip)
        self.window_len = store.window_len
        self._steps = np.arange(self.window_len, dtype=np.int64)

    @classmethod
    def from_frames(
        cls, frames: Mapping[str, pd.DataFrame], lookback: int, predict: int, clip: float = 5.0
    ) -> KlineWindowDataset:
        """All windows of already clean canonical frames (``timestamps`` + six features)."""
        segments = []
        for symbol, frame in frames.items():
            seconds = stamp_seconds(frame[TIMESTAMP])
            segments.append((str(symbol), frame[list(FEATURES)].to_numpy(np.float32), seconds))
        return cls(
            WindowStore.from_segments(segments, lookback + predict + 1), lookback, predict, clip
        )

    # --- sizes and symbols ---
    def __len__(self) -> int:
        return self.store.num_windows

    @property
    def num_symbols(self) -> int:
        return len(self.store.symbols)

    @property
    def symbols(self) -> list[str]:
        return list(self.store.symbols)

    @property
    def window_counts_per_symbol(self) -> np.ndarray:
        return np.diff(self.store.window_offsets)

    @property
    def window_starts(self) -> np.ndarray:
        """Row index (into the split's arrays) of every window's first row; built on demand."""
        counts = self.window_counts_per_symbol
        first = np.repeat(self.store.row_offsets[:-1] - self.store.window_offsets[:-1], counts)
        return first + np.arange(len(self), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def _locate(
        self, indices: np.ndarray | Sequence[int] | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"window index {int(bad)} out of range for {n} windows")
        sym = np.searchsorted(self.store.window_offsets, idx, side="right") - 1
        starts = self.store.row_offsets[sym] + (idx - self.store.window_offsets[sym])
        return sym, starts

    def symbol_of(self, index: int) -> str:
        sym, _ = self._locate([index])
        return self.store.symbols[int(sym[0])]

    def window_times(self, index: int) -> pd.DatetimeIndex:
        """The timestamps of one window's rows (for inspection and tests)."""
        _, starts = self._locate([index])
        seconds = self.store.stamps[starts[0] : starts[0] + self.window_len]
        return pd.DatetimeIndex((seconds * NS_PER_SECOND).astype("datetime64[ns]"))

    def raw_window(self, index: int) -> np.ndarray:
        """The un-normalised float32 rows of one window."""
        _, starts = self._locate([index])
        return self.store.values[starts[0] : starts[0] + self.window_len].copy()

    # --- fetching ---
    def _gather(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        _, starts = self._locate(indices)
        rows = starts[:, None] + self._steps
        x, _, _ = normalise(self.store.values[rows], self.lookback, self.clip, dtype=np.float64)
        stamp = time_features(self.store.stamps[rows])
        return torch.from_numpy(x), torch.from_numpy(stamp)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(index, (int, np.integer)) and not (
            isinstance(index, torch.Tensor) and index.dim() == 0
        ):
            raise TypeError(f"window index must be an int, got {type(index).__name__}")
        x, stamp = self._gather([int(index)])
        return x[0], stamp[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched fast path: ``(x (B, T, 6), stamp (B, T, 5))``; DataLoader calls this."""
        return self._gather(indices)


def collate_windows(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass a ``__getitems__`` batch through; stack a list of ``(x, stamp)`` pairs."""
    if (
        isinstance(batch, tuple)
        and len(batch) == 2
        and isinstance(batch[0], torch.Tensor)
        and batch[0].dim() == 3
    ):
        return batch
    if not batch:
        raise ValueError("collate_windows: empty batch")
    xs, stamps = zip(*batch)
    return torch.stack(list(xs)), torch.stack(list(stamps))
