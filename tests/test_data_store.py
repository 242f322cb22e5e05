"""The memory-mapped window store: one copy per machine, built one symbol at a time.

Two gloo processes mapping one store draw the batches one process draws (and the batches the
in-memory build drew before the store existed); only local rank 0 writes; a build killed at any
point is never used; a changed input file rebuilds; the temporary store of a run without
`cache_dir` is removed at the end and after an error. Run as a script (`python
tests/test_data_store.py <job.json>`), this file is the worker the gloo tests start.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kronos_engine.data import (
    DataSpec,
    KlineWindowDataset,
    WindowSampler,
    WindowStore,
    build_datasets,
    generate_demo_frames,
    load_frames,
    open_splits,
    prepare_store,
)
from kronos_engine.data import cache as cache_mod
from kronos_engine.data.build import settled
from kronos_engine.data.features import FEATURES
from kronos_engine.data.schema import TIMESTAMP
from kronos_engine.data.splits import make_plan, segments_for
from kronos_engine.data.timeutil import NS_PER_SECOND
from kronos_engine.errors import DataError

HERE = Path(__file__).resolve()
BATCH, BATCHES = 4, 5  # per rank
# "AB-1.csv" is listed before "AB.csv" but sorts after "AB": the store rewrites the order.
SYMBOLS = {"AB-1": 90, "AB": 120, "CD": 70}
WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}


def _spec(data: Path, **kw) -> dict:
    base = dict(
        data_source="csv", data_path=str(data), lookback_window=12, predict_window=3,
        split_ratios=[0.6, 0.2, 0.2], freq="day",
    )  # fmt: skip
    base.update(kw)
    return base


def _csv_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i, (symbol, rows) in enumerate(SYMBOLS.items()):
        frame = next(iter(generate_demo_frames(1, rows, "day", seed=5 + i).values()))
        frame.to_csv(root / f"{symbol}.csv", index=False)
    return root


def _in_memory(spec: DataSpec) -> dict[str, KlineWindowDataset]:
    """The splits as the build made them in memory before the store (concatenated segments)."""
    spec = settled(spec)
    plan = make_plan(None, None, None, spec.split_ratios)
    segments: dict[str, list] = {name: [] for name in plan.names}
    for symbol, frame in load_frames(spec).items():
        ns = frame[TIMESTAMP].to_numpy(dtype="datetime64[ns]").view(np.int64)
        values = frame[list(FEATURES)].to_numpy(dtype=np.float32)
        for name, (start, end) in segments_for(plan, ns, spec.lookback_window).items():
            seconds = ns[start:end] // NS_PER_SECOND
            segments[name].append((symbol, values[start:end], seconds))
    return {
        name: KlineWindowDataset(
            WindowStore.from_segments(segs, spec.window_len), spec.lookback_window,
            spec.predict_window,
        )
        for name, segs in segments.items()
    }  # fmt: skip


def _draw(dataset, rank: int, world: int) -> list[tuple[np.ndarray, np.ndarray]]:
    sampler = WindowSampler(dataset, "uniform", BATCH * BATCHES * world, 3, rank, world)
    sampler.set_epoch(1)
    order = list(sampler)
    batches = []
    for k in range(BATCHES):
        x, stamp = dataset.__getitems__(order[k * BATCH : (k + 1) * BATCH])
        batches.append((x.numpy(), stamp.numpy()))
    return batches


def _launch(tmp_path: Path, job: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": job["tmpdir"]}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(HERE), str(path),
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("cached", [True, False])
def test_two_gloo_processes_map_one_store_and_draw_one_process_batches(tmp_path, cached):
    data = _csv_folder(tmp_path / "data")
    spec = _spec(data, cache_dir=str(tmp_path / "cache") if cached else None)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    job = dict(spec=spec, out=str(tmp_path / "out.npz"), tmpdir=str(tmpdir), mode="draw")
    proc = _launch(tmp_path, job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["folders"][0] == report["folders"][1]  # both ranks mapped one folder
    assert report["mapped"] == [True, True]
    assert report["rank1_writes"] == []  # the other rank created, renamed or removed nothing
    assert len(report["rank0_writes"]) > 0  # (the audit sees the builder's writes)
    assert not list(tmpdir.glob("kronos-store-*"))  # the temporary store is gone with the run
    if cached:
        assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(report["folders"][0]).name]
    drawn = np.load(tmp_path / "out.npz", allow_pickle=False)
    # One process, the global batch of both ranks, from the arrays built in memory: rank r's
    # k-th batch is the strided part [r::2] of the k-th global batch.
    reference = _in_memory(DataSpec.from_mapping(spec))["train"]
    glob = WindowSampler(reference, "uniform", BATCH * BATCHES * 2, 3, 0, 1)
    glob.set_epoch(1)
    order = list(glob)
    for rank in (0, 1):
        for k in range(BATCHES):
            part = order[k * 2 * BATCH : (k + 1) * 2 * BATCH][rank::2]
            x, stamp = reference.__getitems__(part)
            np.testing.assert_array_equal(drawn[f"x_{rank}_{k}"], x.numpy())
            np.testing.assert_array_equal(drawn[f"stamp_{rank}_{k}"], stamp.numpy())


def test_a_failed_build_stops_every_rank_with_the_same_line(tmp_path):
    data = _csv_folder(tmp_path / "data")
    spec = _spec(data, lookback_window=200, cache_dir=str(tmp_path / "cache"))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    job = dict(spec=spec, out=str(tmp_path / "out.npz"), tmpdir=str(tmpdir), mode="draw")
    proc = _launch(tmp_path, job)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("rank ")]
    assert len(lines) == 2, proc.stdout + proc.stderr[-2000:]
    (line0, shared0), (line1, shared1) = (ln.split(": ", 1)[1].rsplit(" | ", 1) for ln in lines)
    assert line0 == line1 and "train split has 0 windows" in line0
    assert {shared0, shared1} == {"own", "same_on_every_rank"}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no entry, no .tmp-


KILL_CHILD = """
import json, os, signal, sys
import kronos_engine.data.cache as cache
import kronos_engine.data.store as store
from kronos_engine.data import DataSpec, build_datasets

point, spec = sys.argv[1], DataSpec.from_mapping(json.loads(sys.argv[2]))
sig = signal.SIGTERM if point.startswith("term") else signal.SIGKILL
where = point.split(":")[1] if ":" in point else ""

def die(*args, **kwargs):
    os.kill(os.getpid(), sig)

def wrap(owner, name, after=0):
    original, calls = getattr(owner, name), [0]
    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == after:
            die()
        return original(*args, **kwargs)
    setattr(owner, name, patched)

if where == "append":  # mid-stream: the 3rd symbol segment
    wrap(store.SplitWriter, "append", after=3)
elif where == "finish":  # a header written, the last split not yet
    wrap(store.GrowingNpy, "finish", after=3)
elif where == "rename":  # the manifest written in the temporary folder, not renamed into place
    wrap(cache, "replace_dir", after=1)
splits = build_datasets(spec)
print(len(splits.train), flush=True)
"""


def _child(point: str, spec: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", KILL_CHILD, point, json.dumps(spec)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("where", ["append", "finish", "rename"])
def test_a_killed_build_is_never_used_and_is_rebuilt(tmp_path, where):
    data = _csv_folder(tmp_path / "data")
    spec = _spec(data, cache_dir=str(tmp_path / "cache"))
    proc = _child(f"kill:{where}", spec)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-"), left  # no entry a run would read
    identity = cache_mod.identity_of(DataSpec.from_mapping(spec))
    assert cache_mod.find_entry(spec["cache_dir"], identity, "") is None
    again = build_datasets(DataSpec.from_mapping(spec))
    assert again.summary["cache"] == "built"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        again.train.store.source.parent.name
    ]
    reference = _in_memory(DataSpec.from_mapping(spec))
    for name in ("train", "val", "test"):
        ours, ref = getattr(again, name).store, reference[name].store
        assert ours.symbols == ref.symbols == sorted(SYMBOLS)
        for array in ("values", "stamps", "row_offsets", "window_offsets"):
            np.testing.assert_array_equal(getattr(ours, array), getattr(ref, array))
    assert build_datasets(DataSpec.from_mapping(spec)).summary["cache"] == "hit"


def test_a_changed_input_file_invalidates_the_store(tmp_path):
    data = _csv_folder(tmp_path / "data")
    spec = DataSpec.from_mapping(_spec(data, cache_dir=str(tmp_path / "cache")))
    assert build_datasets(spec).summary["cache"] == "built"
    assert build_datasets(spec).summary["cache"] == "hit"
    path = data / "CD.csv"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the mtime alone
    assert build_datasets(spec).summary["cache"] == "built"
    assert build_datasets(spec).summary["cache"] == "hit"
    # Same size, mtime set back (as `cp -p` / `rsync -t` do): the ctime still changed.
    st = path.stat()
    text = path.read_text()
    digit = next(i for i in range(len(text) - 1, 0, -1) if text[i].isdigit() and text[i] != "7")
    path.write_text(text[:digit] + "7" + text[digit + 1 :])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    rebuilt = build_datasets(spec)
    assert rebuilt.summary["cache"] == "built"
    with path.open("a") as fh:  # the size
        fh.write(text.splitlines()[-1].replace(text.splitlines()[-1][:4], "2099", 1) + "\n")
    assert build_datasets(spec).summary["cache"] == "built"


def test_the_temporary_store_is_removed_at_the_end_and_after_an_error(tmp_path, monkeypatch):
    data = _csv_folder(tmp_path / "data")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    splits = build_datasets(DataSpec.from_mapping(_spec(data)))
    assert splits.summary["cache"] == "disabled"
    (folder,) = tmp.glob("kronos-store-*")
    assert splits.train.store.source.is_relative_to(folder)
    assert isinstance(splits.train.store.values.base, np.memmap)
    del splits
    gc.collect()
    assert not folder.exists()
    with pytest.raises(DataError, match="0 windows"):
        build_datasets(DataSpec.from_mapping(_spec(data, lookback_window=200)))
    assert list(tmp.iterdir()) == []
    # In a process of its own: a SIGTERM mid-build, and a normal exit holding the splits.
    env = {"TMPDIR": str(tmp)}
    term = _child("term:append", _spec(data), env)
    assert term.returncode == 128 + signal.SIGTERM, term.stderr[-2000:]
    assert list(tmp.iterdir()) == []
    done = _child("exit", _spec(data), env)
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr[-2000:]
    assert list(tmp.iterdir()) == []


def test_an_old_format_entry_is_left_and_the_store_built_beside(tmp_path):
    data = _csv_folder(tmp_path / "data")
    spec = DataSpec.from_mapping(_spec(data, cache_dir=str(tmp_path / "cache")))
    old = cache_mod.entry_dir(spec.cache_dir, {**cache_mod.identity_of(spec), "format": 1})
    old.mkdir(parents=True)
    (old / "manifest.json").write_text('{"format": 1}')
    (old / "train.npz").write_bytes(b"old bytes")
    built = build_datasets(spec)
    assert built.summary["cache"] == "built"
    assert sorted(p.name for p in old.iterdir()) == ["manifest.json", "train.npz"]
    assert (old / "train.npz").read_bytes() == b"old bytes"
    assert built.train.store.source.parent.parent == old.parent != built.train.store.source


def test_an_entry_replaced_after_it_was_prepared_is_not_mapped(tmp_path):
    data = _csv_folder(tmp_path / "data")
    spec = DataSpec.from_mapping(_spec(data, cache_dir=str(tmp_path / "cache")))
    prepared = prepare_store(spec)  # local rank 0 of one run ...
    path = data / "CD.csv"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert prepare_store(spec).state == "built"  # ... another run rebuilds the entry ...
    with pytest.raises(DataError, match="replaced by another run"):
        open_splits(spec, prepared)  # ... before this run's ranks mapped it


def test_a_mapped_store_pickles_as_its_folder(tmp_path):
    data = _csv_folder(tmp_path / "data")
    splits = build_datasets(DataSpec.from_mapping(_spec(data, cache_dir=str(tmp_path / "c"))))
    store = splits.train.store
    blob = pickle.dumps(store)
    assert len(blob) < 1000 < store.values.nbytes  # a DataLoader worker gets the path
    again = pickle.loads(blob)
    assert isinstance(again.values.base, np.memmap) and again.symbols == store.symbols
    np.testing.assert_array_equal(again.values, store.values)
    in_memory = _in_memory(DataSpec.from_mapping(_spec(data)))["train"].store
    assert len(pickle.dumps(in_memory)) > in_memory.values.nbytes  # unmapped: the arrays
    x, _ = KlineWindowDataset(again, 12, 3)[5]
    torch.testing.assert_close(x, splits.train[5][0], rtol=0, atol=0)


def _audit(roots: list[str], log: list) -> None:
    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (mode and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
            )
        else:
            path, writes = (args[0] if args else ""), event in WRITE_EVENTS
        if writes and isinstance(path, (str, Path)) and str(path).startswith(tuple(roots)):
            log.append(f"{event} {path}")

    sys.addaudithook(hook)


def _worker(job_path: str) -> None:
    """One rank of the gloo tests: map the run's store, draw batches, report."""
    from kronos_engine.training.executors import make_executor
    from kronos_engine.training.shared_data import load_shared_splits

    job = json.loads(Path(job_path).read_text())
    spec = DataSpec.from_mapping(job["spec"])
    writes: list[str] = []
    roots = [job["tmpdir"], str(Path(job["out"]).parent / "cache")]
    _audit(roots, writes)
    executor = make_executor("cpu")
    rank, world = executor.rank, executor.world_size
    try:
        splits = load_shared_splits(spec, executor)
    except Exception as exc:
        same = "same_on_every_rank" if getattr(exc, "same_on_every_rank", False) else "own"
        # one write for the line (print writes its newline apart: under PYTHONUNBUFFERED the
        # two ranks' lines could interleave)
        sys.stdout.write(f"rank {rank}: {' '.join(str(exc).split())} | {same}\n")
        sys.stdout.flush()
        executor.close(graceful=False)
        sys.exit(2)
    store = splits.train.store
    batches = _draw(splits.train, rank, world)
    gathered = executor.all_gather_object(
        (batches, str(store.source.parent), isinstance(store.values.base, np.memmap), writes)
    )
    if rank == 0:
        arrays = {}
        for r, (drawn, _, _, _) in enumerate(gathered):
            for k, (x, stamp) in enumerate(drawn):
                arrays[f"x_{r}_{k}"], arrays[f"stamp_{r}_{k}"] = x, stamp
        out = Path(job["out"])
        np.savez(out, **arrays)
        report = {
            "folders": [g[1] for g in gathered],
            "mapped": [g[2] for g in gathered],
            "rank0_writes": gathered[0][3],
            "rank1_writes": gathered[1][3],
        }
        out.with_suffix(".json").write_text(json.dumps(report))
    executor.close()


if __name__ == "__main__":
    _worker(sys.argv[1])
