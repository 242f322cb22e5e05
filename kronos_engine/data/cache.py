"""On-disk cache of processed splits: ``npz`` arrays plus a JSON manifest, never pickle.

An entry lives in ``<cache_dir>/<source>-<hash of the data keys>/``. Its manifest records
the data keys, the fields, the split ranges, a content hash of every input file (or of the
demo generator's parameters) and a sha256 of each ``npz``. An entry is reused only when the
keys and the content hash match and the arrays verify; otherwise it is rebuilt in place
(written to a temporary folder first and swapped in, so a crash never leaves a half entry).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kronos_engine.data.demo import DEMO_VERSION
from kronos_engine.data.features import FEATURES, TIME_FEATURES
from kronos_engine.data.frequency import freq_name, settle_source_freq
from kronos_engine.data.markets import MARKET_SOURCES, missing_folder_hint
from kronos_engine.data.schema import parse_freq
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.sources_csv import list_table_files
from kronos_engine.data.spec import DataSpec, as_data_spec
from kronos_engine.data.windows import WindowStore
from kronos_engine.errors import DataError
from kronos_engine.fsio import replace_dir

log = logging.getLogger("kronos_engine.data")
CACHE_FORMAT = 1
_CHUNK = 1 << 22


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


def _hash_file(path: Path, into: Any) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            into.update(chunk)


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
    """A content hash of the inputs the build would read."""
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
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        _hash_file(path, digest)
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


def load_entry(
    cache_dir: str | Path, identity: dict[str, Any], content_hash: str
) -> tuple[dict[str, WindowStore], dict[str, Any]] | None:
    """The cached stores and summary, or ``None`` when absent, stale or damaged."""
    folder = entry_dir(cache_dir, identity)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("identity") != json.loads(json.dumps(identity)):
            log.info("cache %s: data keys changed; rebuilding", folder)
            return None
        if manifest.get("content_hash") != content_hash:
            log.info("cache %s: input files changed; rebuilding", folder)
            return None
        stores = {}
        for name, info in manifest["splits"].items():
            blob = (folder / info["file"]).read_bytes()
            if hashlib.sha256(blob).hexdigest() != info["sha256"]:
                log.warning("cache %s: %s is damaged; rebuilding", folder, info["file"])
                return None
            with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
                stores[name] = WindowStore.from_arrays(
                    {k: arrays[k] for k in arrays.files}, info["symbols"], manifest["window_len"]
                )
        return stores, manifest["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cache %s: unreadable (%s); rebuilding", folder, exc)
        return None


def save_entry(
    cache_dir: str | Path,
    identity: dict[str, Any],
    content_hash: str,
    stores: dict[str, WindowStore],
    summary: dict[str, Any],
) -> Path:
    """Write an entry atomically (a temp folder per process, then `fsio.replace_dir`) and return
    its folder."""
    folder = entry_dir(cache_dir, identity)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    splits = {}
    window_len = 0
    for name, store in stores.items():
        buffer = io.BytesIO()
        np.savez(buffer, **store.arrays())
        blob = buffer.getvalue()
        (tmp / f"{name}.npz").write_bytes(blob)
        window_len = store.window_len
        splits[name] = {
            "file": f"{name}.npz",
            "sha256": hashlib.sha256(blob).hexdigest(),
            "symbols": store.symbols,
            "rows": int(store.values.shape[0]),
            "windows": store.num_windows,
        }
    manifest = {
        "format": CACHE_FORMAT,
        "identity": identity,
        "content_hash": content_hash,
        "fields": list(FEATURES),
        "time_features": list(TIME_FEATURES),
        "window_len": window_len,
        "splits": splits,
        "summary": summary,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    replace_dir(tmp, folder, folder.parent / f".old-{folder.name}-{os.getpid()}")
    return folder
