"""The window store on disk: plain ``.npy`` arrays in the layout ``WindowStore`` reads, written
one symbol at a time and memory-mapped read-only.

A split ``<name>`` is the folder ``<entry>/<name>/`` with ``values.npy`` (float32 ``(N, 6)``),
``stamps.npy`` (int64 ``(N,)``), ``row_offsets.npy`` and ``window_offsets.npy`` (int64
``(S + 1,)``); the symbols are in the entry's manifest. ``values`` and ``stamps`` grow by
appends: a fixed 128-byte header is reserved and rewritten with the final shape when the split
is finished, so a build holds one symbol in memory, not the market. Symbols are stored sorted
by name (as the in-memory build always did); when the source yields them in another order the
finished file is rewritten in sorted order, one symbol segment at a time.

Every process (each rank, each DataLoader worker) maps the same files with
``np.load(mmap_mode='r', allow_pickle=False)``, so the page cache holds one copy per machine.
A pickled ``WindowStore`` that came from here carries only its folder (see
``WindowStore.__getstate__``): a worker started with ``spawn`` maps the files too.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kronos_engine.data.features import FEATURES
from kronos_engine.data.windows import ARRAY_NAMES
from kronos_engine.errors import DataError
from kronos_engine.fsio import atomic_save

HEADER_BYTES = 128  # every header of the shapes stored here (npy 1.0 pads to 64-byte blocks)
ARRAY_FILES = tuple(f"{name}.npy" for name in ARRAY_NAMES)


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
    )
    header = buffer.getvalue()
    if len(header) != HEADER_BYTES:  # pragma: no cover - a shape of more than ~10^40 rows
        raise DataError(f"window store: an .npy header of {len(header)} bytes for {shape}")
    return header


class GrowingNpy:
    """An ``.npy`` file of rows ``(n, *tail)`` written by appends; ``finish`` writes the header."""

    def __init__(self, path: Path, dtype: Any, tail: tuple[int, ...] = ()) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.tail = tuple(tail)
        self.rows = 0
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.tail, dtype=np.int64))
        self._fh = open(self.path, "wb")
        self._fh.write(b"\0" * HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.tail:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, not {self.tail}")
        self._fh.write(memoryview(rows).cast("B"))
        self.rows += len(rows)

    def finish(self, order: list[tuple[int, int]] | None = None) -> None:
        """Write the header; with ``order`` (``(first row, rows)`` segments), rewrite the rows in
        that order first, one segment in memory at a time."""
        self._fh.seek(0)
        self._fh.write(_header(self.dtype, (self.rows, *self.tail)))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if order is None:
            return

        def rewrite(tmp: Path) -> None:
            with open(self.path, "rb") as src, open(tmp, "wb") as dst:
                dst.write(_header(self.dtype, (self.rows, *self.tail)))
                for start, count in order:
                    src.seek(HEADER_BYTES + start * self.row_bytes)
                    dst.write(src.read(count * self.row_bytes))

        atomic_save(self.path, rewrite)

    def abandon(self) -> None:
        if not self._fh.closed:
            self._fh.close()


@dataclass
class _Segment:
    symbol: str
    first_row: int  # in arrival order
    rows: int
    first_target: int  # stamp (seconds) of the first predicted row
    last_target: int


@dataclass
class SplitWriter:
    """One split's arrays on disk, appended one symbol at a time."""

    folder: Path
    window_len: int
    lookback: int
    segments: list[_Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._values = GrowingNpy(self.folder / "values.npy", np.float32, (len(FEATURES),))
        self._stamps = GrowingNpy(self.folder / "stamps.npy", np.int64)

    def append(self, symbol: str, values: np.ndarray, seconds: np.ndarray) -> None:
        first = self._values.rows
        self._values.append(values)
        self._stamps.append(seconds)
        self.segments.append(
            _Segment(symbol, first, len(values), int(seconds[self.lookback]), int(seconds[-1]))
        )

    def ordered(self) -> list[_Segment]:
        return sorted(self.segments, key=lambda seg: seg.symbol)

    def finish(self) -> dict[str, Any]:
        """Close the split (sorted by symbol) and return its manifest record."""
        ordered = self.ordered()
        order = None
        if ordered != self.segments:
            order = [(seg.first_row, seg.rows) for seg in ordered]
        self._values.finish(order)
        self._stamps.finish(order)
        lengths = np.array([seg.rows for seg in ordered], dtype=np.int64)
        row_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        windows = lengths - self.window_len + 1
        window_offsets = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
        np.save(self.folder / "row_offsets.npy", row_offsets, allow_pickle=False)
        np.save(self.folder / "window_offsets.npy", window_offsets, allow_pickle=False)
        return {
            "symbols": [seg.symbol for seg in ordered],
            "rows": int(row_offsets[-1]),
            "windows": int(window_offsets[-1]),
            "first_target": min((seg.first_target for seg in ordered), default=None),
            "last_target": max((seg.last_target for seg in ordered), default=None),
        }

    def abandon(self) -> None:
        self._values.abandon()
        self._stamps.abandon()


def file_stats(folder: Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of every array file of an entry (its manifest's
    check that no file was truncated, replaced or written to since the build)."""
    stats = {}
    for split in sorted(p for p in folder.iterdir() if p.is_dir()):
        for name in ARRAY_FILES:
            st = (split / name).stat()
            stats[f"{split.name}/{name}"] = [st.st_size, st.st_mtime_ns]
    return stats
