"""The cache of processed splits: memory-mapped ``.npy`` stores (``data/store.py``) plus a JSON
manifest, never pickle.

An entry lives in ``<cache_dir>/<source>-<hash of the data keys and CACHE_FORMAT>/``: one folder
per split and ``manifest.json`` (the data keys, the input fingerprint, the symbols, the summary,
and the size and mtime of every array file). An entry is used only when the keys and the
fingerprint match and every array file still has the size and mtime it was written with;
otherwise a new one is built. A build writes into ``.tmp-<entry>-<host>-<pid>/``, the manifest
last, and renames the folder into place (``fsio.replace_dir``): a build killed at any point
leaves only a ``.tmp-`` folder, which no run reads (and the next build on that host removes once
its process is gone). An entry of an older ``CACHE_FORMAT`` has another name: it is left as it
is and the new one is built beside it.

The input fingerprint is cheap (no byte of data is read): the name, size, mtime and ctime of
every input file. A file rewritten with the same size, whose mtime was then set back (``cp -p``,
``rsync -t``, ``touch -d``), still gets a new ctime, which no user tool can set, so it is rebuilt
too; what is not seen is a change that bypasses the filesystem's clock (a corrupted disk block,
a clock set back). Touching or re-copying an unchanged file only costs one rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kronos_engine.data.demo import DEMO_VERSION
from kronos_engine.data.features import FEATURES, TIME_FEATURES
from kronos_engine.data.frequency import freq_name, settle_source_freq
from kronos_engine.data.markets import MARKET_SOURCES, missing_folder_hint
from kronos_engine.data.schema import parse_freq
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.sources_csv import list_table_files
from kronos_engine.data.spec import DataSpec, as_data_spec
from kronos_engine.data.store import file_stats
from kronos_engine.data.windows import WindowStore
from kronos_engine.errors import DataError
from kronos_engine.fsio import atomic_write_text, fsync_dir, replace_dir

log = logging.getLogger("kronos_engine.data")
CACHE_FORMAT = 2  # 1: one npz per split, the inputs hashed byte by byte on every run
MANIFEST = "manifest.json"


def identity_of(cfg: DataSpec | Any) -> dict[str, Any]:
    """Every config key that changes the stored arrays (``clip`` does not: it is applied on read)."""
    # demo/qlib keys as before `auto` existed (`data_source` and `freq`)
    cfg = settle_source_freq(settle_data_source(as_data_spec(cfg), announce=False))
    ident: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "data_source": cfg.data_source,
        "instruments": cfg.instruments,
        "freq": freq_name(cfg.freq),
        "dataset_begin_time": cfg.dataset_begin_time,
        "dataset_end_time": cfg.dataset_end_time,
        "train_time_range": cfg.train_time_range,
        "val_time_range": cfg.val_time_range,
        "test_time_range": cfg.test_time_range,
        "split_ratios": [float(r) for r in cfg.split_ratios],
        "lookback_window": cfg.lookback_window,
        "predict_window": cfg.predict_window,
        "bad_data": cfg.bad_data,
    }
    if cfg.data_source == "demo":
        ident.update(
            demo_symbols=cfg.demo_symbols,
            demo_length=cfg.demo_length,
            seed=cfg.seed,
            demo_version=DEMO_VERSION,
        )
    else:
        ident["data_path"] = str(Path(cfg.data_path or "").expanduser().resolve())
    if cfg.data_source == "qlib":
        ident["qlib_region"] = cfg.qlib_region
    return ident


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _qlib_inputs(cfg: DataSpec) -> list[Path]:
    root = Path(cfg.data_path or "").expanduser().resolve()
    freq = parse_freq(settle_source_freq(cfg).freq).name
    files = [root / "calendars" / f"{freq}.txt"]
    inst_dir = root / "instruments"
    if inst_dir.is_dir():
        files += sorted(inst_dir.glob("*.txt"))
    name = cfg.instruments.strip()
    universe = inst_dir / f"{name.lower()}.txt"
    if "," not in name and universe.is_file():
        symbols = [line.split("\t")[0].strip() for line in universe.read_text().splitlines()]
    else:
        symbols = [s.strip() for s in name.split(",")]
    for symbol in sorted({s for s in symbols if s}):
        folder = root / "features" / symbol.lower()
        if folder.is_dir():
            files += sorted(folder.glob(f"*.{freq}.bin"))
    return [f for f in files if f.is_file()]


def fingerprint_inputs(cfg: DataSpec | Any) -> str:
    """A digest of the name, size, mtime and ctime of every input the build would read (see the
    module doc for what it sees); for the demo data, of its parameters."""
    cfg = settle_data_source(as_data_spec(cfg), announce=False)
    if cfg.data_source == "demo":
        return _digest({"demo": identity_of(cfg)})
    root = Path(cfg.data_path or "").expanduser()
    if cfg.data_source in MARKET_SOURCES and not root.exists():  # never fetched
        raise DataError(missing_folder_hint(cfg.data_source, str(root)))
    files = _qlib_inputs(cfg) if cfg.data_source == "qlib" else list_table_files(root)
    resolved_root = root.resolve()
    digest = hashlib.blake2b(digest_size=32)
    for path in files:
        # Named as listed under data_path, not by where a symlink points: a folder of links to
        # files elsewhere is hashed like a folder of the files themselves.
        name = _name_under(path, root, resolved_root)
        st = path.stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
    return digest.hexdigest()


def _name_under(path: Path, root: Path, resolved_root: Path) -> str:
    for base in (root, resolved_root):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return str(relative) if str(relative) != "." else path.name
    return path.name


def entry_dir(cache_dir: str | Path, identity: dict[str, Any]) -> Path:
    return Path(cache_dir).expanduser() / f"{identity['data_source']}-{_digest(identity)[:20]}"


def find_entry(
    cache_dir: str | Path, identity: dict[str, Any], fingerprint: str
) -> tuple[Path, dict[str, Any]] | None:
    """The entry folder and its manifest, or ``None`` when absent, stale or damaged."""
    folder = entry_dir(cache_dir, identity)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("identity") != json.loads(json.dumps(identity)):
            log.info("cache %s: data keys changed; rebuilding", folder)
            return None
        if manifest.get("fingerprint") != fingerprint:
            log.info("cache %s: input files changed; rebuilding", folder)
            return None
        if file_stats(folder) != manifest["files"] or not manifest["build_id"]:
            log.warning("cache %s: an array file was changed or damaged; rebuilding", folder)
            return None
        return folder, manifest
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cache %s: unreadable (%s); rebuilding", folder, exc)
        return None


def map_entry(
    folder: Path, build_id: str, owner: Any = None
) -> tuple[dict[str, WindowStore], dict[str, Any]]:
    """Every split of the entry's build ``build_id`` memory-mapped read-only, and its manifest;
    an entry another run replaced since it was prepared, or a damaged one, is one line."""
    manifest = _manifest_of_build(folder, build_id)
    try:
        stores = {
            name: WindowStore.map(folder / name, info["symbols"], manifest["window_len"], owner)
            for name, info in manifest["splits"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cache {folder}: cannot be mapped ({exc}); remove the folder") from None
    _manifest_of_build(folder, build_id)  # still that build: the files mapped are its files
    return stores, manifest


def _manifest_of_build(folder: Path, build_id: str) -> dict[str, Any]:
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as exc:
        raise DataError(f"cache {folder}: unreadable manifest ({exc}); run again") from None
    if manifest.get("build_id") != build_id:
        raise DataError(
            f"cache {folder}: replaced by another run while this one opened it; run again"
        )
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())


@contextlib.contextmanager
def building(cache_dir: str | Path, identity: dict[str, Any]) -> Iterator[Path]:
    """A private empty folder to build an entry in; removed if the block fails."""
    folder = entry_dir(cache_dir, identity)
    folder.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{folder.name}-{socket.gethostname()}-"
    _remove_dead_builds(folder.parent, prefix)
    tmp = folder.parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # a dead build of ours with a reused pid
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_dead_builds(parent: Path, prefix: str) -> None:
    """Our ``.tmp-`` folders on this host whose process is gone (a killed build)."""
    for tmp in parent.glob(f"{prefix}*"):
        pid = tmp.name[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(
    tmp: Path,
    identity: dict[str, Any],
    fingerprint: str,
    splits: dict[str, dict[str, Any]],
    window_len: int,
    summary: dict[str, Any],
) -> Path:
    """Write the manifest of the finished build in ``tmp`` (last) and rename it into place."""
    manifest = {
        "format": CACHE_FORMAT,
        "build_id": uuid.uuid4().hex,  # which build a process mapped (see `map_entry`)
        "identity": identity,
        "fingerprint": fingerprint,
        "fields": list(FEATURES),
        "time_features": list(TIME_FEATURES),
        "window_len": window_len,
        "splits": splits,
        "files": file_stats(tmp),
        "summary": summary,
    }
    fsync_dir(tmp)
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    folder = entry_dir(tmp.parent, identity)
    replace_dir(tmp, folder, folder.parent / f".old-{folder.name}-{os.getpid()}")
    fsync_dir(folder.parent)
    return folder
