"""Bad input: each problem raises one clear DataError, or is repaired and counted."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from kronos_engine.config import TrainConfig
from kronos_engine.data import build_datasets, generate_demo_frames, load_frames
from kronos_engine.errors import DataError

N = 60


def _frame() -> pd.DataFrame:
    return generate_demo_frames(1, N, "day", seed=5)["DEMO000"]


def _write(tmp_path, frame: pd.DataFrame, name: str = "SYM") -> str:
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _cfg(path: str, policy: str = "error", **kw) -> TrainConfig:
    base = dict(
        data_source="csv",
        data_path=path,
        bad_data=policy,
        lookback_window=10,
        predict_window=2,
        split_ratios=[0.7, 0.3, 0.0],
    )
    base.update(kw)
    return TrainConfig(**base)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def _repaired(tmp_path, frame):
    path = _write(tmp_path, frame)
    splits = build_datasets(_cfg(path, "repair"))
    return load_frames(_cfg(path, "repair"))["SYM"], splits.summary


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_cells(tmp_path, bad):
    frame = _frame()
    frame.loc[6, "close"] = bad  # data row 7
    path = _write(tmp_path, frame)
    with pytest.raises(DataError) as err:
        load_frames(_cfg(path))
    message = _one_line(err)
    assert path in message and "symbol SYM" in message and "row 7 (" in message
    assert "column close" in message and "bad_data: repair" in message
    fixed, summary = _repaired(tmp_path, frame)
    assert fixed["close"][6] == frame["close"][5]  # forward-filled
    assert summary["repairs"]["nan_inf_cells_filled"] == 1
    assert summary["repairs_by_symbol"] == {"SYM": {"nan_inf_cells_filled": 1}}


def test_empty_cells_are_missing_not_garbage(tmp_path):
    frame = _frame().astype({"volume": object})
    frame.loc[9, "volume"] = ""
    path = _write(tmp_path, frame)
    with pytest.raises(DataError, match=r"row 10 .*column volume is nan"):
        load_frames(_cfg(path))
    fixed, _ = _repaired(tmp_path, frame)
    assert fixed["volume"][9] == frame["volume"][8]


def test_non_positive_prices_and_negative_volume(tmp_path):
    frame = _frame()
    frame.loc[4, "open"] = 0.0
    frame.loc[8, "volume"] = -5
    path = _write(tmp_path, frame)
    with pytest.raises(
        DataError, match=r"row 5 .*column open is 0\.0.*2 bad cell\(s\).*prices > 0"
    ):
        load_frames(_cfg(path))
    fixed, summary = _repaired(tmp_path, frame)
    assert fixed["open"][4] == frame["open"][3] and fixed["volume"][8] == frame["volume"][7]
    assert summary["repairs"]["nonpositive_cells_filled"] == 2
    assert summary["repairs"]["high_low_fixed"] >= 0


def test_leading_missing_rows_are_dropped_and_counted(tmp_path):
    frame = _frame()
    frame.loc[0:1, "high"] = np.nan
    fixed, summary = _repaired(tmp_path, frame)
    assert len(fixed) == N - 2 and fixed["timestamps"][0] == frame["timestamps"][2]
    assert summary["repairs"]["leading_rows_dropped"] == 2
    assert summary["repairs"]["nan_inf_cells_filled"] == 0


def test_missing_amount_cells_are_derived(tmp_path):
    frame = _frame()
    frame.loc[12, "amount"] = np.nan
    with pytest.raises(DataError, match="column amount"):
        load_frames(_cfg(_write(tmp_path, frame)))
    fixed, summary = _repaired(tmp_path, frame)
    row = frame.loc[12]
    assert fixed["amount"][12] == pytest.approx(
        row[["open", "high", "low", "close"]].mean() * row["volume"]
    )
    assert summary["repairs"]["amount_cells_derived"] == 1


def test_absent_amount_column_is_derived_not_a_repair(tmp_path):
    frame = _frame().drop(columns=["amount"])
    splits = build_datasets(_cfg(_write(tmp_path, frame)))
    assert splits.summary["amount_derived_symbols"] == 1
    assert sum(splits.summary["repairs"].values()) == 0


def test_high_below_low(tmp_path):
    frame = _frame()
    hi, lo = frame.loc[20, "high"], frame.loc[20, "low"]
    frame.loc[20, ["high", "low"]] = [lo, hi]  # swapped: high < low
    path = _write(tmp_path, frame)
    with pytest.raises(DataError) as err:
        load_frames(_cfg(path))
    message = _one_line(err)
    assert "row 21" in message and "low <= min(open, close)" in message
    fixed, summary = _repaired(tmp_path, frame)
    ohlc = frame.loc[20, ["open", "high", "low", "close"]].to_numpy(float)
    assert fixed["high"][20] == ohlc.max() and fixed["low"][20] == ohlc.min()
    assert summary["repairs"]["high_low_fixed"] == 1


def test_high_below_close(tmp_path):
    frame = _frame()
    frame.loc[3, "high"] = frame.loc[3, ["open", "close"]].max() * 0.99
    with pytest.raises(DataError, match="row 4 "):
        load_frames(_cfg(_write(tmp_path, frame)))
    fixed, _ = _repaired(tmp_path, frame)
    assert fixed["high"][3] == frame.loc[3, ["open", "close", "low", "high"]].max()


def test_unsorted_timestamps(tmp_path):
    frame = _frame()
    swapped = frame.iloc[[0, 1, 2, 4, 3, *range(5, N)]].reset_index(drop=True)
    path = _write(tmp_path, swapped)
    with pytest.raises(DataError) as err:
        load_frames(_cfg(path))
    message = _one_line(err)
    assert "row 5 (" in message and "sorted" in message
    fixed, summary = _repaired(tmp_path, swapped)
    np.testing.assert_array_equal(fixed["timestamps"], frame["timestamps"])
    np.testing.assert_allclose(fixed["close"], frame["close"])
    assert summary["repairs"]["unsorted_symbols_sorted"] == 1


def test_exact_duplicate_rows(tmp_path):
    frame = _frame()
    duplicated = pd.concat([frame.iloc[:11], frame.iloc[[10]], frame.iloc[11:]]).reset_index(
        drop=True
    )
    with pytest.raises(DataError, match=r"row 12 .*duplicates row 11"):
        load_frames(_cfg(_write(tmp_path, duplicated)))
    fixed, summary = _repaired(tmp_path, duplicated)
    assert len(fixed) == N
    assert summary["repairs"]["duplicate_rows_dropped"] == 1


@pytest.mark.parametrize("policy", ["error", "repair"])
def test_conflicting_duplicate_timestamps_always_fail(tmp_path, policy):
    frame = _frame()
    clash = frame.iloc[[10]].copy()
    clash["close"] *= 1.01
    duplicated = pd.concat([frame.iloc[:11], clash, frame.iloc[11:]]).reset_index(drop=True)
    with pytest.raises(DataError, match=r"row 12 .*also used by row 11 with different values"):
        load_frames(_cfg(_write(tmp_path, duplicated), policy))


@pytest.mark.parametrize("policy", ["error", "repair"])
def test_missing_columns_always_fail(tmp_path, policy):
    path = _write(tmp_path, _frame().drop(columns=["low", "volume"]))
    with pytest.raises(DataError) as err:
        load_frames(_cfg(path, policy))
    message = _one_line(err)
    assert "missing column(s) low, volume" in message and "vol" in message


@pytest.mark.parametrize("policy", ["error", "repair"])
def test_non_numeric_cells_always_fail(tmp_path, policy):
    frame = _frame().astype({"low": object})
    frame.loc[14, "low"] = "12,5"
    with pytest.raises(DataError, match=r"SYM.csv: symbol SYM, row 15 .*non-numeric value '12,5'"):
        load_frames(_cfg(_write(tmp_path, frame), policy))


@pytest.mark.parametrize("policy", ["error", "repair"])
def test_bad_timestamps_always_fail(tmp_path, policy):
    frame = _frame().astype({"timestamps": object})
    frame.loc[7, "timestamps"] = "not a date"
    with pytest.raises(DataError, match=r"row 8.*'not a date' is not a date"):
        load_frames(_cfg(_write(tmp_path, frame), policy))
    frame.loc[7, "timestamps"] = None
    with pytest.raises(DataError, match=r"row 8.*missing timestamp"):
        load_frames(_cfg(_write(tmp_path, frame), policy))


def test_long_table_rows_are_file_rows(tmp_path):
    a, b = _frame().assign(symbol="A"), _frame().assign(symbol="B")
    b.loc[5, "close"] = np.nan  # file row N + 6
    pd.concat([a, b]).to_csv(tmp_path / "long.csv", index=False)
    with pytest.raises(DataError, match=rf"symbol B, row {N + 6} "):
        load_frames(_cfg(str(tmp_path / "long.csv")))


@pytest.mark.parametrize(
    ("ratios", "split"), [([1.0, 0.0, 0.0], "val"), ([0.6, 0.38, 0.02], "test")]
)
def test_split_without_windows_is_an_error(tmp_path, ratios, split):
    path = _write(tmp_path, _frame())
    with pytest.raises(DataError) as err:
        build_datasets(_cfg(path, split_ratios=ratios))
    message = _one_line(err)
    assert message.startswith(f"{split} split has 0 windows") and "split_ratios" in message


def test_val_time_range_without_windows_names_the_range(tmp_path):
    frame = _frame()
    stamps = frame["timestamps"]
    path = _write(tmp_path, frame)
    cfg = _cfg(
        path,
        train_time_range=[str(stamps[0].date()), str(stamps[40].date())],
        val_time_range=[str(stamps[41].date()), str(stamps[41].date())],
    )
    with pytest.raises(DataError, match=r"val split has 0 windows.*val_time_range.*widen"):
        build_datasets(cfg)


def test_every_symbol_too_short(tmp_path, caplog):
    path = _write(tmp_path, _frame().iloc[:12])
    with caplog.at_level(logging.WARNING, logger="kronos_engine.data"):
        with pytest.raises(DataError, match="train split has 0 windows"):
            build_datasets(_cfg(path))
    assert "dropped 1 of 1 symbols" in caplog.text


def test_repair_logs_what_it_did(tmp_path, caplog):
    frame = _frame()
    frame.loc[6, "close"] = np.nan
    with caplog.at_level(logging.WARNING, logger="kronos_engine.data"):
        build_datasets(_cfg(_write(tmp_path, frame), "repair"))
    assert "symbol SYM repaired: nan_inf_cells_filled=1" in caplog.text


def test_unknown_policy_is_rejected(tmp_path):
    cfg = _cfg(_write(tmp_path, _frame()))
    cfg.bad_data = "ignore"
    with pytest.raises(DataError, match="bad_data: 'ignore' is not allowed"):
        load_frames(cfg)
