"""A store one process prepared, handed to the processes it starts (`--nprocs` workers of
`scripts/evaluate.py`): they map its entry instead of building the data once more each, so
the machine builds it once and the page cache holds it once.

The hand-off is an environment variable naming the entry folder, its build and its identity;
a process whose own data keys give another identity, or that finds another build there,
prepares its store as usual. The folder stays the launching process's: it removes a temporary
one when its workers have ended.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kronos_engine.data import cache as cache_mod
from kronos_engine.data.windows import WindowStore

log = logging.getLogger("kronos_engine.data")

ENV = "KRONOS_ENGINE_HANDED_STORE"


def handoff_env(store: WindowStore) -> dict[str, str]:
    """The environment entry that hands `store`'s entry (a mapped split of it) to child
    processes; empty for a store held in memory."""
    if store.source is None:
        return {}
    folder = Path(store.source).parent
    manifest = cache_mod.read_manifest(folder)
    handed = {"folder": str(folder), "build_id": manifest["build_id"]}
    return {ENV: json.dumps({**handed, "identity": manifest["identity"]}, sort_keys=True)}


def received(identity: dict[str, Any]) -> tuple[Path, str] | None:
    """`(folder, build_id)` of the store handed to this process, if it was built from these
    data keys (`identity`) and is still that build; else None (prepare one as usual)."""
    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        handed = json.loads(text)
        folder, build_id = Path(handed["folder"]), handed["build_id"]
        same = _canonical(handed["identity"]) == _canonical(identity)
        current = cache_mod.read_manifest(folder).get("build_id") == build_id
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (same and current):
        return None
    log.info("data: mapping the store the launching process prepared (%s)", folder)
    return folder, build_id


def _canonical(identity: Any) -> str:
    return json.dumps(identity, sort_keys=True, default=str)
