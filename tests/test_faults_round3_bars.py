"""Bad input, third round (issue 19): one validation of bars for training and forecasting.

`kronos_engine/data/bars.py` says what a valid bar is; `clean_frame` (training data) and
`KronosPredictor` (the Python API, and so predict/evaluate) judge bars by it. Before, the API
only checked finiteness in float64: `1e39` became inf in float32 and the forecast came back
all NaN; high below low and negative prices were forecast from without a word.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_forecasting import bars as forecasting_bars

from kronos_engine.data.cleaning import clean_frame
from kronos_engine.data.schema import ROW, TIMESTAMP
from kronos_engine.errors import DataError, ForecastError
from kronos_engine.forecasting import KronosPredictor
from kronos_engine.models.presets import build_predictor, build_tokenizer

COLS = ["open", "high", "low", "close", "volume", "amount"]


def bars(n: int = 40, seed: int = 1) -> pd.DataFrame:
    return forecasting_bars(n, seed=seed)


@pytest.fixture(scope="module")
def predictor() -> KronosPredictor:
    torch.manual_seed(0)
    tok, model = build_tokenizer("tiny").eval(), build_predictor("tiny").eval()
    return KronosPredictor(model, tok, device="cpu", max_context=64)


def _broken(kind: str) -> tuple[pd.DataFrame, int, str]:
    """A valid frame with one bad bar at row 9, and the text both sides must name."""
    frame, row = bars(), 9
    if kind == "beyond_float32":
        frame.loc[row, "volume"] = 1e39
        text = "column volume is 1e+39"
    elif kind == "high_below_low":
        frame.loc[row, "high"] = frame.loc[row, "low"] * 0.9
        text = "allowed: low <= min(open, close) and max(open, close) <= high"
    elif kind == "negative_price":
        frame.loc[row, ["open", "low"]] = -1.0
        text = "column open is -1.0"
    elif kind == "zero_price":
        frame.loc[row, "close"] = 0.0
        text = "column close is 0.0"
    elif kind == "negative_volume":
        frame.loc[row, "volume"] = -5.0
        text = "column volume is -5.0"
    elif kind == "inf_amount":
        frame.loc[row, "amount"] = np.inf
        text = "column amount is inf"
    else:  # high below the close
        frame.loc[row, "high"] = frame.loc[row, "close"] * 0.98
        text = "allowed: low <= min(open, close)"
    return frame, row, text


KINDS = [
    "beyond_float32",
    "high_below_low",
    "negative_price",
    "zero_price",
    "negative_volume",
    "inf_amount",
    "high_below_close",
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_api_refuses_every_bar_training_refuses_with_the_same_words(predictor, kind):
    frame, row, text = _broken(kind)
    with pytest.raises(ForecastError) as api:
        predictor.predict(frame[COLS], frame["timestamps"], None, 3, top_k=1, verbose=False)
    assert f"df: row {row} (index {row})" in str(api.value) and text in str(api.value)

    raw = frame.rename(columns={"timestamps": TIMESTAMP})
    raw[ROW] = np.arange(1, len(frame) + 1)
    with pytest.raises(DataError) as train:
        clean_frame(raw, origin="x.csv", symbol="X", policy="error")
    assert text in str(train.value) and f"row {row + 1}" in str(train.value)


def test_a_valid_frame_still_forecasts_finite_numbers(predictor):
    frame = bars()
    out = predictor.predict(frame[COLS], frame["timestamps"], None, 3, top_k=1, verbose=False)
    assert np.isfinite(out[COLS].to_numpy()).all()


def test_a_derived_amount_beyond_float32_is_refused(predictor):
    frame = bars()
    frame.loc[4, "volume"] = 3e37  # fits float32; x mean price ~50 does not
    with pytest.raises(ForecastError, match=r"df: row 4 .*column amount is"):
        predictor.predict(frame[COLS[:5]], frame["timestamps"], None, 3, top_k=1, verbose=False)


def test_repair_policy_still_fixes_what_error_refuses():
    frame, _, _ = _broken("high_below_low")
    raw = frame.assign(**{ROW: np.arange(1, len(frame) + 1)})
    out, report = clean_frame(raw, origin="x.csv", symbol="X", policy="repair")
    assert report.repairs["high_low_fixed"] == 1 and len(out) == len(frame)
    assert (out["high"] >= out[["open", "close"]].max(axis=1)).all()
