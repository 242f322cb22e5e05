"""From a ``DataSpec`` to train/val/test window datasets (the engine's one entry point): the
windows are prepared once on disk (``prepare_store``: reused from ``cache_dir``, or built), then
memory-mapped (``open_splits``), so several processes on one machine share one copy.

Without ``cache_dir`` the store goes to a temporary folder this process creates
(``kronos-store-*`` under ``TMPDIR``) and removes when the last store mapping it is gone, at
exit, when the build fails, or on a SIGTERM during the build (where SIGTERM had its default
action). Only a SIGKILL (or a SIGTERM after the build, without the training loop's graceful
stop) leaves it behind; a run with ``cache_dir`` leaves nothing a later run would use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kronos_engine.data import cache as cache_mod
from kronos_engine.data import handoff
from kronos_engine.data.build import DataSplits, settled, write_splits
from kronos_engine.data.spec import DataSpec
from kronos_engine.data.windows import KlineWindowDataset

log = logging.getLogger("kronos_engine.data")


class TemporaryStore:
    """A store folder this process created for a run without ``cache_dir``; removed when this
    object is collected (every mapped store holds it), at interpreter exit or by ``remove``,
    and only by the process that created it (not by a forked DataLoader worker)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="kronos-store-"))
        self._finalizer = weakref.finalize(self, _remove_tree, self.path, os.getpid())

    def remove(self) -> None:
        self._finalizer()


def _remove_tree(path: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class PreparedStore:
    """Where a run's store is and how it got there: ``state`` is ``hit``, ``built``,
    ``disabled`` (no ``cache_dir``: a temporary store, ``owner`` removes it) or ``handed``
    (the process that started this one prepared it: ``data.handoff``)."""

    folder: Path
    state: str
    build_id: str  # the manifest's: a store replaced after it was prepared is not mapped
    owner: TemporaryStore | None = None


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """A SIGTERM (with its default action) raises ``SystemExit(143)`` for the block, so the
    temporary folder is removed on the way out instead of left behind."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _build(cfg: DataSpec, cache_dir: Path | str, identity: dict, fingerprint: str) -> Path:
    with cache_mod.building(cache_dir, identity) as tmp:
        records, summary = write_splits(cfg, tmp)
        return cache_mod.publish(tmp, identity, fingerprint, records, cfg.window_len, summary)


def _prepared(folder: Path, state: str, owner: TemporaryStore | None = None) -> PreparedStore:
    return PreparedStore(folder, state, cache_mod.read_manifest(folder)["build_id"], owner)


def prepare_store(cfg: DataSpec | Any) -> PreparedStore:
    """Validate ``cfg.cache_dir``'s entry (cheap: manifest, input sizes and times) or build one
    streaming; without ``cache_dir``, build into a temporary folder. One process per machine
    calls this (the training builder: local rank 0); the others ``open_splits`` its result."""
    cfg = settled(cfg)
    identity = cache_mod.identity_of(cfg)
    handed = handoff.received(identity)
    if handed is not None:  # the launching process's store (`data.handoff`)
        return PreparedStore(handed[0], "handed", handed[1])
    if not cfg.cache_dir:
        owner = TemporaryStore()
        try:
            with _sigterm_stops():
                folder = _build(cfg, owner.path, identity, fingerprint="")
        except BaseException:
            owner.remove()
            raise
        return _prepared(folder, "disabled", owner)
    fingerprint = cache_mod.fingerprint_inputs(cfg)
    found = cache_mod.find_entry(cfg.cache_dir, identity, fingerprint)
    if found is not None:
        log.info("reusing cached splits from %s", found[0])
        return PreparedStore(found[0], "hit", found[1]["build_id"])
    folder = _build(cfg, cfg.cache_dir, identity, fingerprint)
    log.info("cached splits in %s", folder)
    return _prepared(folder, "built")


def open_splits(cfg: DataSpec | Any, prepared: PreparedStore) -> DataSplits:
    """Map a prepared store read-only into the run's datasets (no copy of the arrays)."""
    cfg = settled(cfg)
    stores, manifest = cache_mod.map_entry(prepared.folder, prepared.build_id, prepared.owner)
    summary = dict(manifest["summary"])
    summary["cache"] = prepared.state
    datasets = {
        name: KlineWindowDataset(store, cfg.lookback_window, cfg.predict_window, cfg.clip)
        for name, store in stores.items()
    }
    log.info(
        "data: %s windows (train/val/test) over %d symbols",
        "/".join(str(summary["windows"].get(n, "-")) for n in ("train", "val", "test")),
        summary["symbols_used"],
    )
    return DataSplits(datasets["train"], datasets["val"], datasets.get("test"), summary)


def build_datasets(cfg: DataSpec | Any) -> DataSplits:
    """Datasets for ``cfg``'s data keys in one process, reusing ``cfg.cache_dir`` when nothing
    changed (several processes: ``prepare_store`` on one, ``open_splits`` on each)."""
    return open_splits(cfg, prepare_store(cfg))
