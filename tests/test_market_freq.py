"""`freq: auto` (issue 20): the bar length is read from the data, so intraday bars train with
no flag, and a contradiction still stops with one line."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from kronos_engine.data import DataSpec, build_datasets, load_frames, write_qlib_provider
from kronos_engine.data.frequency import detect_freq
from kronos_engine.errors import DataError


def _session_stamps(
    minutes: int, days: int, *, lunch: bool, drop_every: int = 0
) -> pd.DatetimeIndex:
    """A-share sessions 09:30-11:30 and 13:00-15:00 (or one 09:30-15:00 session), bar close
    times every `minutes`, on business days, some bars missing."""
    stamps = []
    for day in pd.bdate_range("2024-06-03", periods=days):
        sessions = [("09:30", "11:30"), ("13:00", "15:00")] if lunch else [("09:30", "15:00")]
        for start, end in sessions:
            first = day + pd.Timedelta(start + ":00") + pd.Timedelta(minutes=minutes)
            stamps.extend(
                pd.date_range(first, day + pd.Timedelta(end + ":00"), freq=f"{minutes}min")
            )
    index = pd.DatetimeIndex(stamps)
    if drop_every:
        index = index.delete(np.arange(3, len(index), drop_every))
    return index


def _bars(stamps: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(stamps)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    frame = pd.DataFrame({"timestamps": stamps, "open": close * (1 + rng.normal(0, 5e-4, n))})
    frame["high"] = np.maximum(frame["open"], close) * 1.001
    frame["low"] = np.minimum(frame["open"], close) * 0.999
    frame["close"] = close
    frame["volume"] = rng.integers(100, 1000, n).astype(float)
    return frame


CASES = {
    "day": (pd.bdate_range("2023-01-02", periods=300), "day"),
    "1min": (_session_stamps(1, 3, lunch=True, drop_every=17), "1min"),
    "5min": (_session_stamps(5, 12, lunch=True, drop_every=11), "5min"),
    "60min": (_session_stamps(60, 80, lunch=True, drop_every=7), "60min"),
    "15min_one_session": (_session_stamps(15, 30, lunch=False), "15min"),
    "daily_at_close_time": (
        pd.bdate_range("2023-01-02", periods=300) + pd.Timedelta("15:00:00"),
        "day",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_reads_the_bar_length(tmp_path, caplog, case):
    stamps, expected = CASES[case]
    _bars(stamps).to_csv(tmp_path / "A.csv", index=False)
    _bars(stamps, seed=1).to_csv(tmp_path / "B.csv", index=False)
    spec = DataSpec(data_source="csv", data_path=str(tmp_path), lookback_window=20,
                    predict_window=4)  # fmt: skip
    assert spec.freq == "auto"
    with caplog.at_level(logging.INFO, logger="kronos_engine"):
        splits = build_datasets(spec)
    assert splits.summary["freq"] == expected
    assert f"freq: auto -> {expected}" in caplog.text
    assert splits.summary["rows"]["train"] > 0


def test_symbols_of_two_bar_lengths_stop_naming_both(tmp_path):
    _bars(_session_stamps(5, 10, lunch=True)).to_csv(tmp_path / "FIVE.csv", index=False)
    _bars(_session_stamps(1, 2, lunch=True)).to_csv(tmp_path / "ONE.csv", index=False)
    with pytest.raises(DataError) as err:
        load_frames(DataSpec(data_source="csv", data_path=str(tmp_path)))
    text = str(err.value)
    assert "symbol ONE has 1min bars but symbol FIVE has 5min bars" in text
    assert "one bar length per run" in text


def test_an_explicit_freq_that_contradicts_the_data_still_stops(tmp_path):
    _bars(_session_stamps(1, 2, lunch=True)).to_csv(tmp_path / "ONE.csv", index=False)
    with pytest.raises(DataError, match="bar 1 min after the previous one .* freq is 5min"):
        load_frames(DataSpec(data_source="csv", data_path=str(tmp_path), freq="5min"))
    with pytest.raises(DataError, match="second bar on 2024-06-03 .* but freq is day"):
        load_frames(DataSpec(data_source="csv", data_path=str(tmp_path), freq="day"))


def test_irregular_bars_stop_under_auto_too(tmp_path):
    """Mostly 5-minute bars with some 1 minute apart: the measured 5min is then contradicted."""
    stamps = _session_stamps(5, 5, lunch=True)
    extra = stamps[:3] + pd.Timedelta(minutes=1)
    _bars(stamps.append(extra).sort_values()).to_csv(tmp_path / "X.csv", index=False)
    with pytest.raises(DataError, match="bar 1 min after the previous one .* freq is 5min"):
        load_frames(DataSpec(data_source="csv", data_path=str(tmp_path)))


def test_seconds_bars_are_named():
    ns = pd.date_range("2024-01-02 09:30", periods=50, freq="30s").as_unit("ns").asi8
    with pytest.raises(DataError, match="30 s apart most often"):
        detect_freq(ns, "x.csv: symbol X")


def test_a_qlib_provider_says_its_frequency_by_its_calendar(tmp_path):
    pytest.importorskip("qlib")
    stamps = _session_stamps(5, 12, lunch=True)
    frames = {"SH600000": _bars(stamps), "SH600001": _bars(stamps, seed=2)}
    write_qlib_provider(frames, tmp_path / "prov", "5min")
    spec = DataSpec(data_source="qlib", data_path=str(tmp_path / "prov"), lookback_window=20,
                    predict_window=4)  # fmt: skip
    assert build_datasets(spec).summary["freq"] == "5min"
    (tmp_path / "prov" / "calendars" / "day.txt").write_text("2024-06-03\n")
    with pytest.raises(DataError, match=r"cannot choose between the calendars \['5min', 'day'\]"):
        build_datasets(spec)


def test_intraday_csv_trains_with_no_freq_flag_and_the_run_records_the_length(tmp_path):
    """The public repository's case: 5-minute A-share bars, no --freq."""
    import json

    import yaml
    from engine_helpers import save_random_tokenizer

    from kronos_engine.cli.train import main as train_main

    data = tmp_path / "klines"
    data.mkdir()
    stamps = _session_stamps(5, 15, lunch=True, drop_every=13)
    for k, name in enumerate(["600000", "600001"]):
        _bars(stamps, seed=k).to_csv(data / f"{name}.csv", index=False)
    exp = tmp_path / "exp"
    argv = ["--train_type=predictor", "--data_source=csv", f"--data_path={data}",
            f"--tokenizer_path={save_random_tokenizer(tmp_path / 'tok')}", f"--exp_dir={exp}",
            "--model_preset=tiny", "--lookback_window=24", "--predict_window=6", "--max_steps=2",
            "--batch_size=4", "--val_samples=4", "--progress_bar=false"]  # fmt: skip
    assert train_main(argv) == 0
    run = exp / "predictor"
    assert yaml.safe_load((run / "config.yaml").read_text())["freq"] == "5min"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
