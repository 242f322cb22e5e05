"""`DataSpec`: the keys the data build reads. A spec picked from a training config or from a
run's config.yaml reads the same bars as training did, and the cache keys are those written
before the data package took a spec (an old cache entry is still a hit)."""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kronos_engine.cli.predict import run_data_keys
from kronos_engine.config import TrainConfig
from kronos_engine.config.loading import write_config
from kronos_engine.data import (
    DataSpec,
    as_data_spec,
    build_datasets,
    generate_demo_frames,
    iter_clean_frames,
    load_frames,
)
from kronos_engine.data import cache as cache_mod
from kronos_engine.layout import RunLayout
from kronos_engine.run.finished import read_run_config

DATA_DIR = Path(__file__).resolve().parents[1] / "kronos_engine" / "data"

# The training config's data keys that are not the build's: the training sampler's settings.
SAMPLER_KEYS = {"sampling", "train_samples_per_epoch", "val_samples"}


def test_the_spec_has_the_training_configs_names_types_and_defaults():
    config_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    config_types = typing.get_type_hints(TrainConfig)
    spec_types = typing.get_type_hints(DataSpec)
    for f in dataclasses.fields(DataSpec):
        assert f.name in config_fields, f.name
        assert spec_types[f.name] == config_types[f.name], f.name
    assert DataSpec() == DataSpec.from_mapping(dataclasses.asdict(TrainConfig()))
    assert DataSpec().window_len == TrainConfig().window_len
    data_group = {n for n, f in config_fields.items() if f.metadata.get("group") == "data"}
    # Today's `run_data_keys` is the old one (the data group + seed) less the sampler keys.
    assert set(run_data_keys()) == set(DataSpec.keys()) == (data_group | {"seed"}) - SAMPLER_KEYS


def test_from_mapping_picks_by_name_and_as_data_spec_takes_any_description():
    values = {"data_source": "csv", "data_path": "x", "split_ratios": (0.5, 0.5, 0.0)}
    spec = DataSpec.from_mapping({**values, "max_context": 3, "no_such_key": 1})
    assert spec == DataSpec(data_source="csv", data_path="x", split_ratios=[0.5, 0.5, 0.0])
    ratios = [0.6, 0.2, 0.2]
    copied = DataSpec.from_mapping({"split_ratios": ratios})
    ratios[0] = 9.0
    assert copied.split_ratios == [0.6, 0.2, 0.2]  # the spec never shares the caller's list
    cfg = TrainConfig(demo_symbols=3, lookback_window=30, max_context=64)
    assert as_data_spec(cfg) == DataSpec(demo_symbols=3, lookback_window=30)
    assert as_data_spec(cfg.to_dict()) == as_data_spec(cfg)
    assert as_data_spec(spec) is spec
    assert spec.replace(lookback_window=7).lookback_window == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.freq = "5min"  # type: ignore[misc]


def test_the_data_build_imports_no_training_config():
    for name in ("spec.py", "build.py", "cache.py"):
        tree = ast.parse((DATA_DIR / name).read_text())
        imported = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        assert not [m for m in imported if "config" in m], (name, imported)


# Captured from the code before the data package took a DataSpec (commit ad54fa5): the cache
# identity, the entry folder name and the input fingerprint of a few configs; recaptured when
# CACHE_FORMAT became 2 (the mapped .npy store), whose only change to the keys is `format`.
OLD_KEYS = {
    "demo_default": (
        {},
        "demo-cc305fecd4f84b1e2318",
        "baef0ab87ae41364ca24c6d3794b1b13d736c93e8c39433ab074295c247f84e9",
    ),
    "demo_custom": (
        dict(
            demo_symbols=3, demo_length=150, seed=7, lookback_window=20, predict_window=5,
            split_ratios=[0.6, 0.2, 0.2], bad_data="repair", freq="5min",
            dataset_begin_time="2020-01-01",
        ),
        "demo-576db6849fba8399babb",
        "cce4160fc78b12ef14046e95d278e55afbe2ec54a3141477e82f1d0d267fe344",
    ),
    "demo_ranges": (
        dict(
            train_time_range=["2018-01-01", "2019-01-01"],
            val_time_range=["2019-01-02", "2019-06-01"],
            lookback_window=30,
            predict_window=3,
        ),
        "demo-8b1eedd5779868fb1e29",
        "1f55906028608e2bd03742a26bd239a9c3dc53e80bbaf9fab447c14f58d6e292",
    ),
}  # fmt: skip
OLD_DEMO_IDENTITY = {
    "format": 2, "data_source": "demo", "instruments": "all", "freq": "day",
    "dataset_begin_time": None, "dataset_end_time": None, "train_time_range": None,
    "val_time_range": None, "test_time_range": None, "split_ratios": [0.8, 0.1, 0.1],
    "lookback_window": 90, "predict_window": 10, "bad_data": "error", "demo_symbols": 4,
    "demo_length": 800, "seed": 100, "demo_version": 1,
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OLD_KEYS))
def test_cache_keys_are_the_ones_written_before(case):
    overrides, entry, content = OLD_KEYS[case]
    cfg = TrainConfig(**overrides)
    for described in (cfg, DataSpec.from_mapping(dataclasses.asdict(cfg))):
        identity = cache_mod.identity_of(described)
        assert cache_mod.entry_dir("cache", identity).name == entry
        assert cache_mod.fingerprint_inputs(described) == content
    if case == "demo_default":
        assert json.loads(json.dumps(cache_mod.identity_of(DataSpec()))) == OLD_DEMO_IDENTITY


def _old_csv_folder(root: Path) -> Path:
    """The CSV folder the fingerprint above was taken of."""
    root.mkdir(parents=True)
    for i in range(2):
        n = 40
        base = 10 + i + np.arange(n) * 0.1
        frame = pd.DataFrame(
            {
                "timestamps": pd.date_range("2020-01-01", periods=n, freq="D"),
                "open": base, "high": base + 1, "low": base - 1, "close": base + 0.5,
                "volume": 100.0 + np.arange(n), "amount": 1000.0 + np.arange(n),
            }
        )  # fmt: skip
        frame.to_csv(root / f"SYM{i}.csv", index=False)
    return root


def test_a_csv_fingerprint_and_identity_are_the_ones_written_before(tmp_path):
    root = _old_csv_folder(tmp_path / "bars")
    cfg = TrainConfig(
        data_source="csv", data_path=str(root), lookback_window=10, predict_window=2,
        instruments="SYM0,SYM1", freq="day",  # the default before freq: auto
    )  # fmt: skip
    spec = DataSpec.from_mapping(cfg.to_dict())
    # CACHE_FORMAT 2 fingerprints sizes and times, not bytes: equal for both, not a constant.
    assert cache_mod.fingerprint_inputs(spec) == cache_mod.fingerprint_inputs(cfg)
    assert cache_mod.identity_of(spec) == cache_mod.identity_of(cfg) == _csv_identity(root)


def _csv_identity(root: Path) -> dict:
    ident = {k: v for k, v in OLD_DEMO_IDENTITY.items() if not k.startswith("demo_")}
    ident.pop("seed")
    ident.update(data_source="csv", instruments="SYM0,SYM1", lookback_window=10, predict_window=2)
    ident["data_path"] = str(root.resolve())
    return ident


def test_a_cache_written_from_a_training_config_is_a_hit_for_the_runs_spec(tmp_path):
    cfg = TrainConfig(
        cache_dir=str(tmp_path / "cache"), demo_symbols=2, demo_length=200, lookback_window=20,
        predict_window=4,
    )  # fmt: skip
    built = build_datasets(cfg)  # the old call: a TrainConfig
    assert built.summary["cache"] == "built"
    (tmp_path / "run").mkdir()
    write_config(RunLayout(tmp_path / "run").config, cfg)
    spec = DataSpec.from_mapping(read_run_config(tmp_path / "run"))
    hit = build_datasets(spec)
    assert hit.summary["cache"] == "hit"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        cache_mod.entry_dir(cfg.cache_dir, cache_mod.identity_of(cfg)).name
    ]
    for name in ("train", "val", "test"):
        a, b = getattr(built, name).store, getattr(hit, name).store
        assert np.array_equal(a.values, b.values) and np.array_equal(a.stamps, b.stamps)


def test_a_runs_config_yaml_reads_the_bars_training_read(tmp_path):
    """build_datasets from the TrainConfig and from the spec of the run's config.yaml (written
    as training writes it, with a key the data build does not know) give identical arrays."""
    data = tmp_path / "klines"
    data.mkdir()
    for symbol, frame in generate_demo_frames(3, 260, "day", seed=3).items():
        frame.to_csv(data / f"{symbol}.csv", index=False)
    cfg = TrainConfig(
        train_type="predictor", data_source="csv", data_path=str(data), instruments="DEMO000,DEMO002",
        lookback_window=24, predict_window=3, clip=3.0, bad_data="repair",
        train_time_range=["2018-01-01", "2018-07-31"], val_time_range=["2018-08-01", "2018-10-31"],
        test_time_range=["2018-11-01", "2019-12-31"],
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    write_config(RunLayout(tmp_path / "run").config, cfg)
    recorded = read_run_config(tmp_path / "run")
    recorded["a_key_of_a_later_version"] = {"nested": 1}
    spec = DataSpec.from_mapping(recorded)
    trained, read = build_datasets(cfg), build_datasets(spec)
    assert trained.summary == read.summary
    for name in ("train", "val", "test"):
        a, b = getattr(trained, name), getattr(read, name)
        assert np.array_equal(a.store.values, b.store.values), name
        assert np.array_equal(a.store.stamps, b.store.stamps), name
        assert a.store.symbols == b.store.symbols == ["DEMO000", "DEMO002"]
        x, y = a[len(a) - 1], b[len(b) - 1]  # normalised and clipped windows too
        assert all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(x, y))
    frames = load_frames(spec)
    assert list(frames) == ["DEMO000", "DEMO002"]
    for (s1, f1), (s2, f2) in zip(iter_clean_frames(cfg), iter_clean_frames(spec)):
        assert s1 == s2
        pd.testing.assert_frame_equal(f1, f2)
