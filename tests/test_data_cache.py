"""Cache: reused when nothing changed, rebuilt when anything did, never pickle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_engine.config import TrainConfig
from kronos_engine.data import build_datasets, generate_demo_frames, write_qlib_provider


def _cfg(**kw) -> TrainConfig:
    base = dict(lookback_window=10, predict_window=2, split_ratios=[0.6, 0.2, 0.2])
    base.update(kw)
    return TrainConfig(**base)


def _same(a, b) -> None:
    for name in ("train", "val", "test"):
        da, db = getattr(a, name), getattr(b, name)
        assert len(da) == len(db) and da.symbols == db.symbols
        np.testing.assert_array_equal(da.store.values, db.store.values)
        np.testing.assert_array_equal(da.store.stamps, db.store.stamps)
        idx = list(range(0, len(da), 7))
        torch.testing.assert_close(da.__getitems__(idx), db.__getitems__(idx), rtol=0, atol=0)


@pytest.fixture()
def csv_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for sym, frame in generate_demo_frames(3, 80, "day", seed=1).items():
        frame.to_csv(data / f"{sym}.csv", index=False)
    return data


def test_csv_cache_is_reused_then_rebuilt_when_a_file_changes(tmp_path, csv_dir):
    cfg = _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=str(tmp_path / "cache"))
    first = build_datasets(cfg)
    assert first.summary["cache"] == "built"
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    assert manifest["fields"] == ["open", "high", "low", "close", "volume", "amount"]
    assert manifest["identity"]["data_path"] == str(csv_dir.resolve())
    assert manifest["splits"]["val"]["windows"] == len(first.val)
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (entries[0] / split).iterdir()) == [
            "row_offsets.npy",
            "stamps.npy",
            "values.npy",
            "window_offsets.npy",
        ]
        values = np.load(entries[0] / split / "values.npy", mmap_mode="r", allow_pickle=False)
        assert values.dtype == np.float32

    second = build_datasets(cfg)
    assert second.summary["cache"] == "hit"
    _same(first, second)
    assert {k: v for k, v in second.summary.items() if k != "cache"} == {
        k: v for k, v in first.summary.items() if k != "cache"
    }

    frame = pd.read_csv(csv_dir / "DEMO001.csv")
    frame.loc[5, "close"] *= 1.001  # one cell, same file size class
    frame.to_csv(csv_dir / "DEMO001.csv", index=False)
    third = build_datasets(cfg)
    assert third.summary["cache"] == "built"
    assert not np.array_equal(third.train.store.values, first.train.store.values)
    assert build_datasets(cfg).summary["cache"] == "hit"

    (csv_dir / "DEMO001.csv").unlink()
    fourth = build_datasets(cfg)
    assert fourth.summary["cache"] == "built" and fourth.train.num_symbols == 2


def test_config_keys_that_change_the_arrays_rebuild(tmp_path, csv_dir):
    cache = str(tmp_path / "cache")
    base = _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=cache)
    assert build_datasets(base).summary["cache"] == "built"
    for change in [
        dict(lookback_window=12),
        dict(split_ratios=[0.5, 0.3, 0.2]),
        dict(instruments="DEMO000,DEMO002"),
        dict(dataset_begin_time="2018-01-10"),
        dict(bad_data="repair"),
    ]:
        cfg = _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=cache, **change)
        assert build_datasets(cfg).summary["cache"] == "built", change
        assert build_datasets(cfg).summary["cache"] == "hit", change
    assert build_datasets(base).summary["cache"] == "hit"


def test_clip_is_applied_on_read_so_the_cache_is_shared(tmp_path, csv_dir):
    cache = str(tmp_path / "cache")
    wide = build_datasets(
        _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=cache, clip=5.0)
    )
    tight = build_datasets(
        _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=cache, clip=0.5)
    )
    assert tight.summary["cache"] == "hit"
    x_wide, _ = wide.train[0]
    x_tight, _ = tight.train[0]
    assert float(x_tight.abs().max()) == 0.5 and float(x_wide.abs().max()) > 0.5


def test_demo_cache_depends_on_seed_and_size(tmp_path):
    cache = str(tmp_path / "cache")
    a = build_datasets(_cfg(cache_dir=cache, demo_length=120, seed=1))
    assert build_datasets(_cfg(cache_dir=cache, demo_length=120, seed=1)).summary["cache"] == "hit"
    b = build_datasets(_cfg(cache_dir=cache, demo_length=120, seed=2))
    assert b.summary["cache"] == "built"
    assert not np.array_equal(a.train.store.values, b.train.store.values)
    assert (
        build_datasets(_cfg(cache_dir=cache, demo_length=130, seed=1)).summary["cache"] == "built"
    )


def test_damaged_cache_is_rebuilt(tmp_path, csv_dir):
    cfg = _cfg(data_source="csv", data_path=str(csv_dir), cache_dir=str(tmp_path / "cache"))
    build_datasets(cfg)
    # Mapped, not copied: a write into the entry's files would change `first` too.
    first = build_datasets(_cfg(data_source="csv", data_path=str(csv_dir)))
    (entry,) = list((tmp_path / "cache").iterdir())
    blob = bytearray((entry / "val" / "values.npy").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (entry / "val" / "values.npy").write_bytes(bytes(blob))
    again = build_datasets(cfg)
    assert again.summary["cache"] == "built"
    _same(first, again)
    (entry / "manifest.json").write_text("{not json")
    assert build_datasets(cfg).summary["cache"] == "built"


def test_qlib_cache_tracks_provider_files(tmp_path):
    frames = generate_demo_frames(2, 60, "day", seed=3)
    provider = tmp_path / "provider"
    write_qlib_provider(frames, provider, "day")
    cfg = _cfg(data_source="qlib", data_path=str(provider), cache_dir=str(tmp_path / "cache"))
    assert build_datasets(cfg).summary["cache"] == "built"
    assert build_datasets(cfg).summary["cache"] == "hit"
    frames["DEMO000"].loc[10, "volume"] += 1000
    write_qlib_provider(frames, provider, "day")
    assert build_datasets(cfg).summary["cache"] == "built"
