"""Coming from the public Kronos scripts (issue 22): their habits work on the first try."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from kronos_engine.data import DataSpec, generate_demo_frames, load_frames
from kronos_engine.forecasting.inputs import ohlcv_values

PRICES = ["open", "high", "low", "close"]


def test_the_public_import_habit_works():
    """`from model import Kronos, KronosTokenizer, KronosPredictor` in the public code."""
    from kronos_engine import Kronos, KronosPredictor, KronosTokenizer
    from kronos_engine.forecasting import KronosPredictor as Predictor
    from kronos_engine.models import Kronos as ModelsKronos
    from kronos_engine.models import KronosTokenizer as ModelsTokenizer

    assert (Kronos, KronosTokenizer, KronosPredictor) == (ModelsKronos, ModelsTokenizer, Predictor)


@pytest.mark.parametrize("amount", ["zeros", "empty", "zeros_and_empty"])
def test_an_all_zero_or_empty_amount_is_derived_in_training_and_forecasting(
    tmp_path, caplog, amount
):
    frame = generate_demo_frames(1, 80, "day", seed=3)["DEMO000"]
    derived = frame[PRICES].mean(axis=1) * frame["volume"]
    given = frame.copy()
    given["amount"] = {
        "zeros": 0.0,
        "empty": np.nan,
        "zeros_and_empty": np.where(np.arange(len(frame)) % 2, 0.0, np.nan),
    }[amount]
    given.to_csv(tmp_path / "SYM.csv", index=False)
    spec = DataSpec(data_source="csv", data_path=str(tmp_path / "SYM.csv"))
    with caplog.at_level(logging.INFO, logger="kronos_engine"):
        loaded = load_frames(spec)["SYM"]
    np.testing.assert_allclose(loaded["amount"], derived, rtol=1e-12)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("amount:")]
    assert len(lines) == 1 and "1 symbol(s) (SYM)" in lines[0]
    # The forecasting input reads the column the same way.
    values = ohlcv_values(given.drop(columns=["timestamps"]))
    np.testing.assert_allclose(values[:, 5], derived.astype(np.float32), rtol=1e-6)


def test_a_partly_zero_amount_is_real_data():
    frame = generate_demo_frames(1, 40, "day", seed=3)["DEMO000"]
    frame.loc[:9, "amount"] = 0.0  # untraded value on some bars: kept as given
    values = ohlcv_values(frame.drop(columns=["timestamps"]))
    assert (values[:10, 5] == 0).all() and (values[10:, 5] > 0).all()
    pd.testing.assert_series_equal(
        pd.Series(values[10:, 5]), frame["amount"][10:].astype(np.float32).reset_index(drop=True),
        check_names=False,
    )  # fmt: skip
