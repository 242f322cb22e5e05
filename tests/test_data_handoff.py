"""A store one process prepared and handed to the processes it starts (`data.handoff`): they
map it instead of building the data again, and only when it is the store they would build."""

from __future__ import annotations

import json
import shutil
import tempfile

import numpy as np
import pytest
import yaml

from kronos_engine.data import DataSpec, build_datasets, prepare_store
from kronos_engine.data.handoff import ENV, handoff_env
from tests.test_cli import _env, check_ok, run_cli
from tests.test_forecast_processes import REPO, exp_dir  # noqa: F401  (the module's fixture)


def _spec(**extra) -> DataSpec:
    values = dict(data_source="demo", demo_symbols=3, demo_length=160, lookback_window=12)
    return DataSpec.from_mapping({**values, "predict_window": 3, **extra})


@pytest.fixture()
def own_tmp(tmp_path, monkeypatch):
    """TMPDIR for this test alone: the temporary stores made in it can be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_handed_store_is_mapped_not_built_again(own_tmp, monkeypatch):
    parent = build_datasets(_spec())
    assert len(list(own_tmp.glob("kronos-store-*"))) == 1
    monkeypatch.setenv(ENV, handoff_env(parent.test.store)[ENV])
    prepared = prepare_store(_spec())
    assert prepared.state == "handed" and prepared.owner is None
    assert prepared.folder == parent.test.store.source.parent
    assert len(list(own_tmp.glob("kronos-store-*"))) == 1  # nothing built
    child = build_datasets(_spec())
    assert child.summary["cache"] == "handed"
    for name in ("train", "val", "test"):
        a, b = getattr(parent, name).store, getattr(child, name).store
        np.testing.assert_array_equal(a.values, b.values)
        assert isinstance(b.values.base, np.memmap) and b.symbols == a.symbols


def test_another_data_spec_or_another_build_prepares_its_own(own_tmp, monkeypatch):
    parent = build_datasets(_spec())
    handed = json.loads(handoff_env(parent.test.store)[ENV])
    monkeypatch.setenv(ENV, json.dumps(handed))
    assert prepare_store(_spec(lookback_window=13)).state == "disabled"  # other windows
    assert prepare_store(_spec(demo_symbols=2)).state == "disabled"  # other data
    monkeypatch.setenv(ENV, json.dumps({**handed, "build_id": "another"}))
    assert prepare_store(_spec()).state == "disabled"  # the folder holds another build
    monkeypatch.setenv(ENV, "not json")
    assert prepare_store(_spec()).state == "disabled"


def test_a_store_in_memory_hands_nothing(own_tmp):
    splits = build_datasets(_spec())
    store = splits.test.store
    assert handoff_env(store)  # mapped: handed
    store.source = None  # as a store built in memory (no folder)
    assert handoff_env(store) == {}


def test_evaluate_workers_map_the_parents_store_and_it_goes_with_the_parent(exp_dir, tmp_path):  # noqa: F811
    """A run without `cache_dir`: the parent builds the split into a temporary store, its 2
    workers map that one (rank 0 says so; neither builds), and it is removed at the end."""
    exp = tmp_path / "exp"
    shutil.copytree(exp_dir / "predictor", exp / "predictor", symlinks=True)
    config = exp / "predictor" / "config.yaml"
    values = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**values, "cache_dir": None}))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = [f"--exp_dir={exp}", "--top_k=1", "--no_plots", "--max_origins=4", "--no_progress"]
    proc = run_cli(
        "--nprocs=2", *args, f"--output={tmp_path / 'two'}", cwd=tmp_path,
        script=REPO / "scripts" / "evaluate.py", env={**_env(), "TMPDIR": str(tmp)},
    )  # fmt: skip
    check_ok(proc)
    handed = "mapping the store the launching process prepared (" + str(tmp / "kronos-store-")
    assert proc.stderr.count(handed) == 1, proc.stderr[-3000:]  # rank 0 logs; rank 1 alike
    assert (tmp_path / "two" / "metrics.json").is_file()
    assert not list(tmp.glob("kronos-store-*"))  # the parent's temporary store went with it
