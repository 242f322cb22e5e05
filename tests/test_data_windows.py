"""Windows: normalisation, no leakage, time features, batching and splits."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_engine.config import TrainConfig
from kronos_engine.data import (
    FEATURES,
    KlineWindowDataset,
    build_datasets,
    collate_windows,
    generate_demo_frames,
)
from kronos_engine.data.features import time_features

L, P = 12, 3
T = L + P + 1


@pytest.fixture(scope="module")
def frames():
    out = generate_demo_frames(3, 90, "30min", seed=8)
    out["DEMO001"] = out["DEMO001"].iloc[:40].reset_index(drop=True)
    out["DEMO002"] = out["DEMO002"].iloc[:T].reset_index(drop=True)  # exactly one window
    return out


@pytest.fixture(scope="module")
def ds(frames):
    return KlineWindowDataset.from_frames(frames, L, P, clip=3.0)


def _reference(frame: pd.DataFrame, start: int, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """The public per-sample recipe: pandas slice, float32, stats of the lookback, clip."""
    win = frame.iloc[start : start + T]
    x = win[list(FEATURES)].to_numpy().astype(np.float32)
    mean, std = x[:L].mean(axis=0), x[:L].std(axis=0)
    x = np.clip((x - mean) / (std + 1e-5), -clip, clip)
    ts = pd.DatetimeIndex(win["timestamps"])
    stamp = np.stack([ts.minute, ts.hour, ts.day_of_week, ts.day, ts.month], axis=1).astype(
        np.float32
    )
    return x, stamp


def test_windows_match_the_reference_recipe(ds, frames):
    assert len(ds) == (90 - T + 1) + (40 - T + 1) + 1
    assert ds.num_symbols == 3
    np.testing.assert_array_equal(ds.window_counts_per_symbol, [90 - T + 1, 40 - T + 1, 1])
    for index in [0, 5, 74, 75, 99, len(ds) - 1]:
        symbol = ds.symbol_of(index)
        offset = index - int(
            np.concatenate([[0], np.cumsum(ds.window_counts_per_symbol)])[ds.symbols.index(symbol)]
        )
        x, stamp = ds[index]
        ref_x, ref_stamp = _reference(frames[symbol], offset, 3.0)
        assert x.dtype == torch.float32 and stamp.dtype == torch.float32
        assert x.shape == (T, 6) and stamp.shape == (T, 5)
        np.testing.assert_allclose(x.numpy(), ref_x, atol=2e-4)
        np.testing.assert_array_equal(stamp.numpy(), ref_stamp)
        assert float(x.abs().max()) <= 3.0
    assert ds.symbol_of(-1) == "DEMO002"
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_lookback_statistics_are_exact(ds):
    x, _ = ds[3]
    raw = ds.raw_window(3).astype(np.float64)
    expected = (raw[:L] - raw[:L].mean(0)) / (raw[:L].std(0) + 1e-5)
    np.testing.assert_allclose(x[:L].numpy(), np.clip(expected, -3, 3), rtol=1e-5, atol=1e-6)


def test_changing_rows_after_the_lookback_never_changes_the_lookback(frames):
    rng = np.random.default_rng(0)
    base = KlineWindowDataset.from_frames(frames, L, P, clip=5.0)
    for start in [0, 7, 30]:
        changed = {k: v.copy() for k, v in frames.items()}
        target = changed["DEMO000"]
        future = slice(start + L, start + T)
        rows = target.index[future]
        target.loc[rows, list(FEATURES)] = rng.uniform(1e-3, 1e6, size=(len(rows), 6))
        target.loc[rows[-1] + 1 :, list(FEATURES)] *= 50.0  # and everything after the window
        other = KlineWindowDataset.from_frames(changed, L, P, clip=5.0)
        x0, s0 = base[start]
        x1, s1 = other[start]
        torch.testing.assert_close(x1[:L], x0[:L], rtol=0, atol=0)
        torch.testing.assert_close(s1, s0, rtol=0, atol=0)
        assert not torch.equal(x1[L:], x0[L:])


def test_constant_lookback_gives_zeros_not_nan():
    frame = generate_demo_frames(1, T, "day")["DEMO000"]
    frame.loc[:, list(FEATURES)] = 7.0
    ds = KlineWindowDataset.from_frames({"C": frame}, L, P)
    x, _ = ds[0]
    assert torch.isfinite(x).all() and float(x.abs().max()) == 0.0


def test_getitems_is_the_batched_getitem(ds):
    indices = [3, 0, 80, 3, len(ds) - 1]
    xb, sb = ds.__getitems__(indices)
    assert xb.shape == (5, T, 6) and sb.shape == (5, T, 5)
    for row, index in enumerate(indices):
        x, s = ds[index]
        torch.testing.assert_close(xb[row], x, rtol=0, atol=0)
        torch.testing.assert_close(sb[row], s, rtol=0, atol=0)
    assert collate_windows((xb, sb)) == (xb, sb)
    stacked = collate_windows([ds[i] for i in indices])
    torch.testing.assert_close(stacked[0], xb)
    torch.testing.assert_close(stacked[1], sb)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_windows)
    first = next(iter(loader))
    torch.testing.assert_close(first[0], ds.__getitems__([0, 1, 2, 3])[0])


def test_window_starts_and_memory(ds):
    starts = ds.window_starts
    assert starts.dtype == np.int64 and len(starts) == len(ds)
    assert starts[0] == 0 and starts[90 - T + 1] == 90  # second symbol starts at its first row
    rows = ds.store.values.shape[0]
    assert ds.nbytes <= 1.5 * rows * 6 * 4


def test_time_features_match_pandas():
    rng = np.random.default_rng(1)
    seconds = rng.integers(-2_208_988_800, 4_102_444_800, size=5000)  # 1900 .. 2100
    ts = pd.DatetimeIndex((seconds * 1_000_000_000).astype("datetime64[ns]"))
    expected = np.stack([ts.minute, ts.hour, ts.day_of_week, ts.day, ts.month], axis=1)
    np.testing.assert_array_equal(time_features(seconds), expected.astype(np.float32))
    leap = pd.Timestamp("2024-02-29 13:59").value // 1_000_000_000
    assert time_features(np.array([leap])).tolist() == [[59, 13, 3, 29, 2]]


# ---------------------------------------------------------------- splits


def _cfg(path, **kw) -> TrainConfig:
    base = dict(data_source="csv", data_path=str(path), lookback_window=L, predict_window=P)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("splits")
    frames = generate_demo_frames(2, 100, "day", seed=4)
    frames["SHORT"] = generate_demo_frames(1, T - 1, "day", seed=5)["DEMO000"]
    for sym, frame in frames.items():
        frame.to_csv(root / f"{sym}.csv", index=False)
    return root, frames


def test_ratio_splits_with_lookback_overlap(csv_dir, caplog):
    root, frames = csv_dir
    with caplog.at_level(logging.WARNING, logger="kronos_engine.data"):
        splits = build_datasets(_cfg(root, split_ratios=[0.6, 0.2, 0.2]))
    assert "dropped 1 of 3 symbols" in caplog.text and "SHORT" in caplog.text
    assert splits.summary["symbols_dropped"] == {"SHORT": f"{T - 1} rows; a window needs {T}"}
    stamps = frames["DEMO000"]["timestamps"]
    # train: rows [0, 60); val targets rows [60, 80); test targets rows [80, 100)
    assert len(splits.train) == 2 * (60 - T + 1)
    assert len(splits.val) == 2 * (20 - P) and len(splits.test) == 2 * (20 - P)
    last_train = splits.train.window_times(60 - T)
    assert last_train[-1] == stamps[59]
    first_val = splits.val.window_times(0)
    assert first_val[0] == stamps[60 - L] and first_val[L] == stamps[60]  # history from train
    last_val = splits.val.window_times(20 - P - 1)
    assert last_val[-1] == stamps[79]
    assert splits.test.window_times(0)[L] == stamps[80]
    assert splits.summary["targets"]["val"]["first_target"] == str(stamps[60])
    assert splits.summary["windows"] == {"train": 2 * (60 - T + 1), "val": 34, "test": 34}


def test_ratio_split_without_test(csv_dir):
    root, _ = csv_dir
    splits = build_datasets(_cfg(root, split_ratios=[0.75, 0.25, 0.0]))
    assert splits.test is None and "test" not in splits.summary["windows"]
    assert len(splits.val) == 2 * (25 - P)


def test_time_range_splits(csv_dir, caplog):
    root, frames = csv_dir
    stamps = frames["DEMO000"]["timestamps"]
    day = lambda i: str(stamps[i].date())  # noqa: E731
    cfg = _cfg(
        root,
        train_time_range=[day(0), day(49)],
        val_time_range=[day(50), day(74)],
        test_time_range=[day(75), day(99)],
    )
    with caplog.at_level(logging.WARNING, logger="kronos_engine.data"):
        splits = build_datasets(cfg)
    assert "overlaps" not in caplog.text
    assert splits.summary["split"]["mode"] == "time_ranges"
    assert len(splits.train) == 2 * (50 - T + 1)
    assert len(splits.val) == 2 * (25 - P) and len(splits.test) == 2 * (25 - P)
    for i in range(len(splits.val)):
        times = splits.val.window_times(i)
        assert stamps[50] <= times[L] and times[-1] <= stamps[74]  # targets inside the range
    assert splits.val.window_times(0)[0] == stamps[50 - L]  # lookback reaches into train
    for i in range(len(splits.train)):
        assert splits.train.window_times(i)[-1] <= stamps[49]


def test_time_range_date_only_end_includes_the_whole_day(tmp_path):
    frames = generate_demo_frames(1, 4 * 20, "60min", seed=2)  # 4 bars a day, 20 days
    frames["DEMO000"].to_csv(tmp_path / "A.csv", index=False)
    stamps = frames["DEMO000"]["timestamps"]
    cfg = _cfg(
        tmp_path,
        freq="60min",
        lookback_window=6,
        predict_window=1,
        train_time_range=[str(stamps[0].date()), str(stamps[39].date())],
        val_time_range=[str(stamps[40].date()), str(stamps[79].date())],
    )
    splits = build_datasets(cfg)
    assert splits.summary["rows"]["train"] == 40  # all 4 bars of the 10th day
    assert splits.summary["targets"]["val"]["last_target"] == str(stamps[79])


def test_overlapping_time_ranges_are_logged(csv_dir, caplog):
    root, frames = csv_dir
    stamps = frames["DEMO000"]["timestamps"]
    cfg = _cfg(
        root,
        train_time_range=[str(stamps[0].date()), str(stamps[60].date())],
        val_time_range=[str(stamps[50].date()), str(stamps[99].date())],
    )
    with caplog.at_level(logging.WARNING, logger="kronos_engine.data"):
        splits = build_datasets(cfg)
    assert "train_time_range" in caplog.text and "overlaps" in caplog.text
    assert splits.test is None


def test_val_range_requires_train_range(csv_dir):
    root, _ = csv_dir
    from kronos_engine.errors import DataError

    with pytest.raises(DataError, match="train_time_range: required when splitting by time"):
        build_datasets(_cfg(root, val_time_range=["2018-01-01", "2018-03-01"]))
