"""Sources: demo generator, CSV/Parquet layouts and spellings, Qlib provider via real pyqlib."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from kronos_engine.config import TrainConfig
from kronos_engine.data import (
    FEATURES,
    build_datasets,
    generate_demo_frames,
    load_frames,
    write_qlib_provider,
)
from kronos_engine.errors import DataError


def _cfg(**kw) -> TrainConfig:
    base = dict(lookback_window=20, predict_window=4, split_ratios=[0.7, 0.3, 0.0])
    base.update(kw)
    return TrainConfig(**base)


def _assert_same(frame: pd.DataFrame, ref: pd.DataFrame, rtol: float = 1e-12) -> None:
    assert list(frame.columns) == ["timestamps", *FEATURES]
    np.testing.assert_array_equal(
        frame["timestamps"].to_numpy("datetime64[ns]"), ref["timestamps"].to_numpy("datetime64[ns]")
    )
    np.testing.assert_allclose(
        frame[list(FEATURES)].to_numpy(), ref[list(FEATURES)].to_numpy(), rtol=rtol
    )


# ---------------------------------------------------------------- demo


def test_demo_bars_are_valid_and_realistic():
    frames = generate_demo_frames(symbols=3, length=3000, freq="day", seed=7)
    assert sorted(frames) == ["DEMO000", "DEMO001", "DEMO002"]
    for frame in frames.values():
        assert len(frame) == 3000
        o, h, lo, c, v, a = (frame[k].to_numpy() for k in FEATURES)
        assert np.all(lo > 0) and np.all(v > 0)
        assert np.all(h >= np.maximum(o, c)) and np.all(np.minimum(o, c) >= lo)
        assert np.all(a >= lo * v * (1 - 1e-12)) and np.all(a <= h * v * (1 + 1e-12))
        stamps = pd.DatetimeIndex(frame["timestamps"])
        assert stamps.is_monotonic_increasing and stamps.is_unique
        assert np.all(stamps.day_of_week < 5)  # business days
        r = np.diff(np.log(c))
        # volatility clustering: |returns| are autocorrelated, raw returns hardly
        absr = np.abs(r) - np.abs(r).mean()
        acf_abs = float(np.dot(absr[1:], absr[:-1]) / np.dot(absr, absr))
        assert acf_abs > 0.05
        # fat tails: excess kurtosis of returns
        z = (r - r.mean()) / r.std()
        assert float(np.mean(z**4)) > 3.3
        # log price stays in a sane band over a long history
        assert 0.5 < c.max() / c.min() < 1e3


def test_demo_is_deterministic_and_seeded():
    a = generate_demo_frames(2, 200, "day", seed=3)
    b = generate_demo_frames(2, 200, "day", seed=3)
    c = generate_demo_frames(2, 200, "day", seed=4)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k])
        assert not np.allclose(a[k]["close"], c[k]["close"])
    # symbol k does not depend on how many symbols were asked for
    more = generate_demo_frames(5, 200, "day", seed=3)
    pd.testing.assert_frame_equal(a["DEMO001"], more["DEMO001"])


def test_demo_intraday_has_sessions_and_u_shaped_volume():
    frames = generate_demo_frames(4, 48 * 60, "5min", seed=1)
    frame = frames["DEMO000"]
    stamps = pd.DatetimeIndex(frame["timestamps"])
    minutes = stamps.hour * 60 + stamps.minute
    assert minutes.min() == 9 * 60 + 30 and minutes.max() == 14 * 60 + 55
    assert not np.any((minutes >= 11 * 60 + 30) & (minutes < 13 * 60))  # lunch break
    assert len(set(minutes)) == 48
    volume = pd.concat([f["volume"] for f in frames.values()]).to_numpy()
    slot = np.tile(np.arange(48), len(volume) // 48)
    by_slot = np.array([np.median(volume[slot == s]) for s in range(48)])
    middle = by_slot[20:28].mean()
    assert by_slot[:3].mean() > 1.5 * middle and by_slot[-3:].mean() > 1.5 * middle


def test_demo_source_builds_with_default_config():
    splits = build_datasets(TrainConfig())
    assert splits.summary["source"] == "demo"
    assert json.loads(json.dumps(splits.summary)) == splits.summary
    assert splits.summary["symbols_used"] == 4
    x, stamp = splits.train[0]
    assert x.shape == (101, 6) and stamp.shape == (101, 5)


def test_demo_rejects_unknown_freq():
    with pytest.raises(DataError, match="freq: 'weekly'"):
        generate_demo_frames(1, 10, "weekly")


# ---------------------------------------------------------------- csv / parquet


@pytest.fixture(scope="module")
def demo3():
    frames = generate_demo_frames(3, 120, "day", seed=11)
    frames["DEMO002"] = frames["DEMO002"].iloc[30:].reset_index(drop=True)  # a shorter symbol
    return frames


def test_csv_one_file_per_symbol_and_folder(tmp_path, demo3):
    for sym, frame in demo3.items():
        frame.to_csv(tmp_path / f"{sym}.csv", index=False)
    (tmp_path / "notes.md").write_text("ignored: not a table")
    frames = load_frames(_cfg(data_source="csv", data_path=str(tmp_path)))
    assert list(frames) == sorted(demo3)
    for sym in demo3:
        _assert_same(frames[sym], demo3[sym])
    single = load_frames(_cfg(data_source="csv", data_path=str(tmp_path / "DEMO001.csv")))
    assert list(single) == ["DEMO001"]
    chosen = load_frames(
        _cfg(data_source="csv", data_path=str(tmp_path), instruments="demo002, DEMO000")
    )
    assert list(chosen) == ["DEMO000", "DEMO002"]
    with pytest.raises(DataError, match="NOPE not found under data_path"):
        load_frames(_cfg(data_source="csv", data_path=str(tmp_path), instruments="DEMO000,NOPE"))


def test_csv_long_table_with_column_spellings(tmp_path, demo3):
    parts = []
    for sym, frame in demo3.items():
        part = frame.rename(
            columns={"timestamps": "Date", "volume": "VOL", "open": "Open", "close": " CLOSE "}
        ).drop(columns=["amount"])
        part.insert(0, "Ticker", sym)
        parts.append(part)
    table = pd.concat(parts).sample(frac=1.0, random_state=0)  # interleaved symbols
    table = table.sort_values(["Date"], kind="stable")
    table.to_csv(tmp_path / "all.csv", index=False)
    frames = load_frames(_cfg(data_source="csv", data_path=str(tmp_path / "all.csv")))
    assert list(frames) == sorted(demo3)
    for sym, ref in demo3.items():
        expected = ref.copy()
        expected["amount"] = ref[["open", "high", "low", "close"]].mean(axis=1) * ref["volume"]
        _assert_same(frames[sym], expected)


def test_csv_symbol_codes_keep_leading_zeros_and_yyyymmdd_dates(tmp_path, demo3):
    frame = demo3["DEMO000"].copy()
    frame["code"] = "000001"
    frame["trade_date"] = frame.pop("timestamps").dt.strftime("%Y%m%d").astype(int)
    frame.rename(columns={"amount": "amt"}).to_csv(tmp_path / "t.csv", index=False)
    frames = load_frames(_cfg(data_source="csv", data_path=str(tmp_path / "t.csv")))
    assert list(frames) == ["000001"]
    _assert_same(frames["000001"], demo3["DEMO000"])


def test_parquet_files_and_intraday(tmp_path):
    frames = generate_demo_frames(2, 200, "1min", seed=5)
    for sym, frame in frames.items():
        frame.rename(columns={"timestamps": "datetime"}).to_parquet(tmp_path / f"{sym}.parquet")
    loaded = load_frames(_cfg(data_source="csv", data_path=str(tmp_path), freq="1min"))
    for sym in frames:
        _assert_same(loaded[sym], frames[sym])
    splits = build_datasets(_cfg(data_source="csv", data_path=str(tmp_path), freq="1min"))
    _, stamp = splits.train[0]
    minute_of_day = stamp[:, 1] * 60 + stamp[:, 0]
    assert minute_of_day[0] == 9 * 60 + 30 and minute_of_day[1] == 9 * 60 + 31


def test_csv_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_frames(_cfg(data_source="csv", data_path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="holds no"):
        load_frames(_cfg(data_source="csv", data_path=str(tmp_path)))


def test_symbol_in_two_files_is_rejected(tmp_path, demo3):
    demo3["DEMO000"].to_csv(tmp_path / "DEMO000.csv", index=False)
    long = demo3["DEMO000"].assign(symbol="DEMO000")
    long.to_csv(tmp_path / "zz_long.csv", index=False)
    with pytest.raises(DataError, match="symbol DEMO000 is also in"):
        load_frames(_cfg(data_source="csv", data_path=str(tmp_path)))


# ---------------------------------------------------------------- qlib


@pytest.fixture(scope="module")
def qlib_day(tmp_path_factory):
    """A daily provider with symbols of different spans (and a gap), written by our writer."""
    frames = generate_demo_frames(4, 150, "day", seed=21)
    frames["DEMO001"] = frames["DEMO001"].iloc[20:].reset_index(drop=True)  # starts later
    gap = frames["DEMO002"]
    frames["DEMO002"] = gap.drop(index=range(60, 65)).reset_index(drop=True)  # 5 untraded days
    frames["DEMO003"] = frames["DEMO003"].drop(columns=["amount"])  # amount derived on write
    root = tmp_path_factory.mktemp("qlib_day")
    write_qlib_provider(frames, root, "day", universes={"pair": ["DEMO000", "DEMO002"]})
    return root, frames


def test_writer_layout_matches_qlib_format(qlib_day):
    root, frames = qlib_day
    calendar = (root / "calendars" / "day.txt").read_text().split()
    assert calendar[0] == "2018-01-02" and len(calendar) == 150
    lines = (root / "instruments" / "all.txt").read_text().splitlines()
    assert lines[1] == f"DEMO001\t{calendar[20]}\t{calendar[-1]}"
    raw = np.fromfile(root / "features" / "demo001" / "close.day.bin", dtype="<f4")
    assert raw[0] == 20 and len(raw) == 1 + 130
    np.testing.assert_allclose(raw[1:], frames["DEMO001"]["close"].to_numpy(np.float32))
    gap = np.fromfile(root / "features" / "demo002" / "open.day.bin", dtype="<f4")
    assert np.isnan(gap[1 + 60 : 1 + 65]).all() and not np.isnan(gap[1:61]).any()


def test_qlib_reads_back_through_pyqlib(qlib_day, caplog):
    root, frames = qlib_day
    cfg = _cfg(data_source="qlib", data_path=str(root))
    with caplog.at_level(logging.INFO, logger="kronos_engine.data"):
        splits = build_datasets(cfg)
    loaded = load_frames(cfg)
    assert list(loaded) == sorted(frames)
    for sym, ref in frames.items():
        expected = ref.copy()
        if "amount" not in expected:
            expected["amount"] = ref[["open", "high", "low", "close"]].mean(axis=1) * ref["volume"]
        _assert_same(loaded[sym], expected, rtol=2e-7)  # stored as float32
    assert splits.summary["untraded_rows_dropped"] == 5
    assert splits.summary["symbols_used"] == 4
    assert "data:" in caplog.text


def test_qlib_universe_list_and_time_range(qlib_day):
    root, frames = qlib_day
    pair = load_frames(_cfg(data_source="qlib", data_path=str(root), instruments="pair"))
    assert list(pair) == ["DEMO000", "DEMO002"]
    listed = load_frames(
        _cfg(data_source="qlib", data_path=str(root), instruments="DEMO003,DEMO001")
    )
    assert sorted(listed) == ["DEMO001", "DEMO003"]
    stamps = frames["DEMO000"]["timestamps"]
    cut = load_frames(
        _cfg(
            data_source="qlib",
            data_path=str(root),
            instruments="DEMO000",
            dataset_begin_time=str(stamps[10].date()),
            dataset_end_time=str(stamps[99].date()),
        )
    )["DEMO000"]
    assert len(cut) == 90 and cut["timestamps"].iloc[0] == stamps[10]
    with pytest.raises(DataError, match="NOPE have no features"):
        load_frames(_cfg(data_source="qlib", data_path=str(root), instruments="NOPE,DEMO000"))


def test_qlib_several_providers_in_one_process(qlib_day, tmp_path):
    root, frames = qlib_day
    other = generate_demo_frames(2, 100, "15min", seed=99)
    write_qlib_provider(other, tmp_path, "15min")
    loaded = load_frames(_cfg(data_source="qlib", data_path=str(tmp_path), freq="15min"))
    assert list(loaded) == ["DEMO000", "DEMO001"]
    _assert_same(loaded["DEMO001"], other["DEMO001"], rtol=2e-7)
    again = load_frames(_cfg(data_source="qlib", data_path=str(root), instruments="DEMO000"))
    _assert_same(again["DEMO000"], frames["DEMO000"], rtol=2e-7)


def test_qlib_missing_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist.*write_qlib_provider"):
        load_frames(_cfg(data_source="qlib", data_path=str(tmp_path / "none")))
    (tmp_path / "features").mkdir()
    with pytest.raises(DataError) as err:
        load_frames(_cfg(data_source="qlib", data_path=str(tmp_path)))
    message = str(err.value)
    assert "calendars/day.txt" in message and "instruments/" in message
    assert "features/" not in message.split("missing")[1].split("(")[0]
    assert "write_qlib_provider" in message and "\n" not in message


def test_qlib_bad_values_follow_policy(tmp_path):
    frames = generate_demo_frames(1, 80, "day", seed=2)
    frames["DEMO000"].loc[33, "close"] = np.nan  # partial NaN: bad data, not an untraded day
    write_qlib_provider(frames, tmp_path, "day")
    stamp = frames["DEMO000"]["timestamps"][33]
    with pytest.raises(DataError, match=f"symbol DEMO000, at {stamp}: column close"):
        load_frames(_cfg(data_source="qlib", data_path=str(tmp_path)))
    fixed = load_frames(_cfg(data_source="qlib", data_path=str(tmp_path), bad_data="repair"))
    close = fixed["DEMO000"]["close"].to_numpy()
    assert close[33] == close[32]


def test_writer_rejects_bad_frames(tmp_path):
    frame = generate_demo_frames(1, 10, "day")["DEMO000"]
    with pytest.raises(DataError, match="duplicate timestamp"):
        write_qlib_provider({"A": pd.concat([frame, frame.iloc[[3]]])}, tmp_path)
    with pytest.raises(DataError, match="cannot name a folder"):
        write_qlib_provider({"../x": frame}, tmp_path)
    intraday = generate_demo_frames(1, 10, "60min")["DEMO000"]
    with pytest.raises(DataError, match="time of day but freq is 'day'"):
        write_qlib_provider({"A": intraday}, tmp_path, "day")
    with pytest.raises(DataError, match="missing column"):
        write_qlib_provider({"A": frame.drop(columns=["close"])}, tmp_path)


def test_timestamp_forms_tz_epoch_and_index():
    from kronos_engine.data.cleaning import clean_frame
    from kronos_engine.data.schema import canonical_columns

    frame = generate_demo_frames(1, 30, "60min", seed=1)["DEMO000"]
    expected = frame["timestamps"].to_numpy("datetime64[ns]")
    seconds = frame["timestamps"].to_numpy("datetime64[s]").astype(np.int64)
    variants = {
        "tz-aware keeps wall time": frame.assign(
            timestamps=frame["timestamps"].dt.tz_localize("Asia/Shanghai")
        ),
        "epoch seconds": frame.assign(timestamps=seconds),
        "epoch milliseconds": frame.assign(timestamps=seconds * 1000),
        "DatetimeIndex": frame.set_index("timestamps"),
        "text": frame.assign(timestamps=frame["timestamps"].dt.strftime("%Y/%m/%d %H:%M")),
    }
    for name, variant in variants.items():
        out, _ = clean_frame(
            canonical_columns(variant, "x", "A"), origin="x", symbol="A", policy="error"
        )
        np.testing.assert_array_equal(
            out["timestamps"].to_numpy("datetime64[ns]"), expected, err_msg=name
        )
