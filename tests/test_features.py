"""One definition of what a model sees: a training window and a forecast's context built from
the same bars get the same normalised values and the same calendar features; the rolling
evaluation's array path gives what its DataFrame path gives, to the bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kronos_engine.data import KlineWindowDataset, generate_demo_frames
from kronos_engine.data.features import FEATURES, NORM_EPS, normalise, time_features
from kronos_engine.evaluation.baselines import DriftForecaster
from kronos_engine.evaluation.origins import plan_origins
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
from kronos_engine.forecasting import KronosPredictor, SamplingOptions
from kronos_engine.models import build_predictor, build_tokenizer

L, P, CLIP = 24, 5, 3.0
COLS = list(FEATURES)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate_demo_frames(2, 150, "30min", seed=4)


@pytest.fixture(scope="module")
def predictor() -> KronosPredictor:
    torch.manual_seed(0)
    return KronosPredictor(build_predictor("tiny"), build_tokenizer("tiny"), "cpu", 64, CLIP)


class Captured(Exception):
    pass


def model_view(predictor: KronosPredictor, history: pd.DataFrame, future: pd.Series):
    """What `predict` hands the model for a DataFrame, stopped before the model runs."""
    seen = {}

    def capture(contexts, stamps, pred_len, options, verbose, keys):
        seen.update(contexts=contexts, stamps=stamps, options=options)
        raise Captured

    predictor._generate = capture  # the instance only; removed below
    try:
        with pytest.raises(Captured):
            predictor.predict(history[COLS], history["timestamps"], future, P, verbose=False)
    finally:
        del predictor._generate
    return seen


@pytest.mark.parametrize("index", [0, 37, 100])
def test_a_training_window_and_a_forecast_context_see_the_same_inputs(frames, predictor, index):
    ds = KlineWindowDataset.from_frames(frames, L, P, clip=CLIP)
    x, stamp = ds[index]
    symbol = ds.symbol_of(index)
    frame = frames[symbol].set_index("timestamps", drop=False)
    times = ds.window_times(index)
    history, future = frame.loc[times[:L]], frame.loc[times[L : L + P], "timestamps"]
    seen = model_view(predictor, history, future)
    (context,), (stamps,) = seen["contexts"], seen["stamps"]
    assert np.array_equal(stamps, stamp[: L + P].numpy())  # calendar features: identical
    # Training normalises in float64, forecasting in float32 (the public arithmetic): they
    # agree to float32 rounding of the raw values, magnified by 1 / std in (x - mean) / std.
    raw = ds.raw_window(index)
    inputs = predictor.model_inputs(
        [history[COLS].to_numpy(np.float32)],
        [ds.store.stamps[:L]],  # any stamps: only the values' statistics are compared
        [ds.store.stamps[:P]],
        P,
    )
    scale = inputs.scales[0]
    assert np.array_equal(inputs.contexts[0], context)
    tol = 8 * np.finfo(np.float32).eps * np.abs(raw).max(axis=0) / scale
    assert (np.abs(context - x[:L].numpy()) <= tol).all()
    # The window's later rows are normalised with the context's statistics, as the
    # forecast is denormalised with them.
    later = np.clip((raw[L:] - inputs.means[0]) / scale, -CLIP, CLIP)
    assert (np.abs(later - x[L:].numpy()) <= tol).all()


def test_normalise_is_both_sides_old_arithmetic():
    rng = np.random.default_rng(1)
    v = (rng.lognormal(0, 2, size=(4, 30, 6)) * 1e3).astype(np.float32)
    # the training windows: float64 statistics of the first L rows, in place, then float32
    x = v.astype(np.float64)
    mean, std = x[:, :L].mean(axis=1, keepdims=True), x[:, :L].std(axis=1, keepdims=True)
    expected = np.clip((x - mean) / (std + NORM_EPS), -CLIP, CLIP).astype(np.float32)
    assert np.array_equal(normalise(v, L, CLIP, dtype=np.float64)[0], expected)
    # the public predictor: float32 statistics of a DataFrame's (column-major) values
    ctx = np.asfortranarray(v[0, :L])
    m, s = np.mean(ctx, axis=0), np.std(ctx, axis=0)
    public = np.clip((ctx - m) / (s + 1e-5), -CLIP, CLIP).astype(np.float32)
    got, got_mean, got_scale = normalise(ctx, clip=CLIP, dtype=np.float32)
    assert np.array_equal(got, public) and got.dtype == np.float32
    assert np.array_equal(got_mean[0], m) and np.array_equal(got_scale[0], s + np.float32(1e-5))


def test_time_features_of_zoned_stamps_keep_the_wall_clock():
    from kronos_engine.data.features import stamp_seconds

    stamps = pd.date_range("2024-03-29 22:00", periods=6, freq="7h", tz="Europe/Berlin")
    expected = np.stack(
        [stamps.minute, stamps.hour, stamps.dayofweek, stamps.day, stamps.month], axis=1
    )
    assert np.array_equal(time_features(stamp_seconds(stamps)), expected.astype(np.float32))


class FramesOnly(KronosPredictor):
    """The same model, but its own `predict_batch`: the evaluation calls it with frames."""

    def predict_batch(self, *args, **kwargs):
        return super().predict_batch(*args, **kwargs)


class FramesDrift(DriftForecaster):
    def predict_batch(self, *args, **kwargs):
        return super().predict_batch(*args, **kwargs)


@pytest.mark.parametrize("sample_count", [1, 3])
def test_the_rolling_array_path_equals_the_dataframe_path(frames, predictor, sample_count):
    store = KlineWindowDataset.from_frames(frames, L, P).store
    origins = plan_origins(store, L, P, stride=9)
    frames_only = FramesOnly(predictor.model, predictor.tokenizer, "cpu", 64, CLIP)
    sampling = SamplingOptions(T=0.8, top_p=0.95, sample_count=sample_count, seed=5)
    opts = ForecastOptions(pred_len=P, lookback=L, sampling=sampling, batch_size=4)
    tables = {}
    for name, forecasters in {
        "arrays": {"m": predictor, "drift": DriftForecaster()},
        "frames": {"m": frames_only, "drift": FramesDrift()},
    }.items():
        parts = []
        run_rolling(store, origins, forecasters, opts, sink=parts.append, progress=False)
        tables[name] = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(tables["arrays"], tables["frames"], check_exact=True)
    assert ForecastOptions(pred_len=P, lookback=L, seed=5).sampling == SamplingOptions(seed=5)
