"""One copy of a run's windows per machine: local rank 0 builds or validates the store while the
other ranks wait in a collective, then every rank (and its DataLoader workers) maps the same
files, so the page cache holds the data once however many ranks read it.

The wait is an `all_gather_object` on the run's process group, not a file lock: a builder that
fails sends its one line instead of a folder, and every rank raises it (the same line, reported
by rank 0 alone), so no rank hangs. The builder of a rank is global rank `rank - local_rank`
(torchrun numbers the ranks of a machine contiguously).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kronos_engine import distenv
from kronos_engine.data import DataSpec, DataSplits, PreparedStore, open_splits, prepare_store
from kronos_engine.errors import DataError, TrainingError, UserError


def load_shared_splits(spec: DataSpec, executor: Any) -> DataSplits:
    """The run's datasets, built or validated by local rank 0 and mapped by every rank."""
    world, rank = executor.world_size, executor.rank
    local = distenv.local_rank() if world > 1 else 0
    prepared: PreparedStore | None = None
    failure: tuple[str, str] | None = None
    own_error: BaseException | None = None
    if local == 0:
        try:
            prepared = prepare_store(spec)
        except Exception as exc:  # every rank stops with this line (see `_raise_first`)
            own_error, failure = exc, _describe(exc)
    where = None if prepared is None else (str(prepared.folder), prepared.state, prepared.build_id)
    sent = (failure, where)
    outcomes = executor.all_gather_object(sent)
    _raise_first(outcomes, rank, own_error)
    if prepared is None:
        folder, state, build_id = outcomes[rank - local][1]
        prepared = PreparedStore(Path(folder), state, build_id)
    splits = None
    try:
        splits = open_splits(spec, prepared)
        failure, own_error = None, None
    except Exception as exc:
        own_error, failure = exc, _describe(exc)
    # Every rank has mapped the files before any goes on (a temporary store's owner may end).
    _raise_first(executor.all_gather_object((failure, None)), rank, own_error)
    assert splits is not None
    return splits


def _describe(exc: BaseException) -> tuple[str, str]:
    kind = "user" if isinstance(exc, UserError) else type(exc).__name__
    return kind, " ".join(str(exc).split()) or type(exc).__name__


def _raise_first(outcomes: list, rank: int, own_error: BaseException | None) -> None:
    failed = [(r, out[0]) for r, out in enumerate(outcomes) if out[0] is not None]
    if not failed:
        return
    source, (kind, line) = failed[0]
    if source == rank and own_error is not None:
        raise own_error
    error: Exception = DataError(line) if kind == "user" else TrainingError(f"{kind}: {line}")
    error.same_on_every_rank = True  # type: ignore[attr-defined]  # rank `source` reports it
    raise error
