"""Forecasting: the KV cache is exact, KronosPredictor keeps the public API and numbers, and
it adds unequal-length batches, samples, quantiles, seeds and inferred timestamps."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REFERENCE_DIR

from kronos_engine import KronosPredictor
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting import auto_regressive_inference, generate
from kronos_engine.forecasting.timestamps import infer_future_stamps
from kronos_engine.layout import RunLayout
from kronos_engine.models import KVCache, build_predictor, build_tokenizer
from kronos_engine.run.finished import find_predictor_run

COLS = ["open", "high", "low", "close", "volume", "amount"]
REFERENCE_BARS = REFERENCE_DIR / "predict_tiny" / "input.csv"


# --- the cache ------------------------------------------------------------------------------


def small_models(seed: int = 0):
    """Random models bigger than `tiny` (more bits, so greedy ids are a real test)."""
    torch.manual_seed(seed)
    tok = build_tokenizer("tiny")
    pred = build_predictor("tiny")
    return tok.eval(), pred.eval()


def random_stamps(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    limits = torch.tensor([60, 24, 7, 32, 13])
    return (torch.rand(n, 5, generator=g) * limits).floor()


def test_cached_logits_equal_full_recomputation():
    _, pred = small_models()
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randint(0, 16, (3, 20), generator=g), torch.randint(0, 16, (3, 20), generator=g)
    stamp = random_stamps(20, 2).expand(3, -1, -1)
    cache = KVCache(20)
    with torch.no_grad():
        logits, hidden = pred.decode_s1(s1[:, :12], s2[:, :12], stamp[:, :12], cache=cache)
        s2_logits = pred.decode_s2(hidden, s1[:, 12:13], cache=cache)
        cache.advance(12)
        full, full_hidden = pred.decode_s1(s1[:, :12], s2[:, :12], stamp[:, :12])
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            s2_logits[:, 0], pred.decode_s2(full_hidden, s1[:, 12:13])[:, -1]
        )
        for end in range(13, 20):
            step, hid = pred.decode_s1(
                s1[:, end - 1 : end], s2[:, end - 1 : end], stamp[:, end - 1 : end], cache=cache
            )
            step_s2 = pred.decode_s2(hid, s1[:, end : end + 1], cache=cache)
            cache.advance(1)
            ref, ref_hidden = pred.decode_s1(s1[:, :end], s2[:, :end], stamp[:, :end])
            ref_s2 = pred.decode_s2(ref_hidden, s1[:, end : end + 1])[:, -1]
            torch.testing.assert_close(step[:, 0], ref[:, -1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step_s2[:, 0], ref_s2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context, max_context", [(30, 64), (30, 36), (40, 32)])
def test_cached_greedy_ids_equal_the_public_loop(context, max_context):
    """Inside the context, sliding past it during generation, and longer from the start."""
    tok, pred = small_models(3)
    x = torch.randn(4, context, 6, generator=torch.Generator().manual_seed(4))
    stamps = random_stamps(context + 12, 5).expand(4, -1, -1)
    args = (tok, pred, x, stamps[:, :context], stamps[:, context:], max_context, 12)
    cached = auto_regressive_inference(*args, top_k=1)
    public = auto_regressive_inference(*args, top_k=1, use_cache=False)
    torch.testing.assert_close(cached, public, atol=1e-5, rtol=1e-4)
    paths = generate(tok, pred, list(x), list(stamps), 12, max_context, top_k=1)
    recomputed = generate(
        tok, pred, list(x), list(stamps), 12, max_context, top_k=1, use_cache=False
    )
    assert torch.equal(paths, recomputed) or torch.allclose(paths, recomputed, atol=1e-5)
    torch.testing.assert_close(paths[:, 0], public[:, -12:], atol=1e-5, rtol=1e-4)


def test_unequal_lengths_in_one_batch_equal_one_by_one():
    tok, pred = small_models(6)
    g = torch.Generator().manual_seed(7)
    lengths, pred_len, max_context = [9, 25, 17, 40], 8, 32  # 40 slides from the start
    contexts = [torch.randn(n, 6, generator=g) for n in lengths]
    stamps = [random_stamps(n + pred_len, n) for n in lengths]
    batch = generate(tok, pred, contexts, stamps, pred_len, max_context, top_k=1)
    for i in range(len(lengths)):
        alone = generate(tok, pred, [contexts[i]], [stamps[i]], pred_len, max_context, top_k=1)
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=1e-4)


def test_sampling_with_a_generator_is_reproducible():
    tok, pred = small_models(8)
    x = [torch.randn(20, 6, generator=torch.Generator().manual_seed(9))]
    st = [random_stamps(26, 1)]

    def run(seed):
        return generate(tok, pred, x, st, 6, 64, T=1.0, top_p=0.9, sample_count=5,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, 5, 6, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0, 0], a[0, 1])  # the paths differ from each other


# --- KronosPredictor ------------------------------------------------------------------------


PUBLIC_PREDICT = ["self", "df", "x_timestamp", "y_timestamp", "pred_len", "T", "top_k", "top_p",
                  "sample_count", "verbose"]  # fmt: skip
PUBLIC_BATCH = ["self", "df_list", "x_timestamp_list", "y_timestamp_list", "pred_len", "T",
                "top_k", "top_p", "sample_count", "verbose"]  # fmt: skip


def test_public_signatures_are_kept():
    def positional(fn):
        params = inspect.signature(fn).parameters.values()
        return [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]

    assert positional(KronosPredictor.__init__) == [
        "self", "model", "tokenizer", "device", "max_context", "clip"
    ]  # fmt: skip
    assert positional(KronosPredictor.predict) == PUBLIC_PREDICT
    assert positional(KronosPredictor.predict_batch) == PUBLIC_BATCH
    defaults = inspect.signature(KronosPredictor.predict).parameters
    assert (defaults["T"].default, defaults["top_k"].default, defaults["top_p"].default) == (
        1.0, 0, 0.9
    )  # fmt: skip
    assert defaults["sample_count"].default == 1 and defaults["verbose"].default is True
    init = inspect.signature(KronosPredictor.__init__).parameters
    assert init["max_context"].default == 512 and init["clip"].default == 5


@pytest.fixture(scope="module")
def reference_cases(reference_dir: Path):
    folder = reference_dir / "predict_tiny"
    cases = json.loads((folder / "cases.json").read_text())
    bars = pd.read_csv(folder / "input.csv", parse_dates=["timestamps"])
    return folder, cases, bars


def reference_predictor(reference_dir: Path, max_context: int) -> KronosPredictor:
    return KronosPredictor.from_pretrained(
        reference_dir / "tokenizer_tiny", reference_dir / "predictor_tiny", "cpu", max_context, 5
    )


def assert_frame_matches(actual: pd.DataFrame, expected_csv: Path) -> None:
    expected = pd.read_csv(expected_csv, parse_dates=["timestamps"], index_col="timestamps")
    assert list(actual.columns) == COLS
    assert actual.index.equals(expected.index)
    scale = np.abs(expected.to_numpy()).max(axis=0)
    np.testing.assert_allclose(actual.to_numpy() / scale, expected.to_numpy() / scale, atol=1e-4)


@pytest.mark.parametrize("name", ["inside", "sliding", "no_amount"])
def test_predict_matches_the_public_predictor(reference_dir, reference_cases, name):
    folder, cases, bars = reference_cases
    case = next(c for c in cases["cases"] if c["name"] == name)
    start, end = case["rows"]
    history, future = bars.iloc[start:end], bars.iloc[end : end + case["pred_len"]]
    predictor = reference_predictor(reference_dir, case["max_context"])
    # Called exactly as code written for the public class calls it.
    out = predictor.predict(
        df=history[case["input_columns"]],
        x_timestamp=history["timestamps"],
        y_timestamp=future["timestamps"],
        pred_len=case["pred_len"],
        T=1.0,
        top_k=1,
        top_p=1.0,
        sample_count=1,
        verbose=False,
    )
    assert_frame_matches(out, folder / case["output"])


def test_predict_batch_matches_the_public_predictor(reference_dir, reference_cases):
    folder, cases, bars = reference_cases
    case = next(c for c in cases["cases"] if c["kind"] == "predict_batch")
    n, p = case["context"], case["pred_len"]
    histories = [bars.iloc[s : s + n] for s in case["starts"]]
    futures = [bars.iloc[s + n : s + n + p]["timestamps"] for s in case["starts"]]
    predictor = reference_predictor(reference_dir, case["max_context"])
    outs = predictor.predict_batch(
        [h[COLS] for h in histories], [h["timestamps"] for h in histories], futures, p,
        T=1.0, top_k=1, top_p=1.0, sample_count=1, verbose=False,
    )  # fmt: skip
    for out, name in zip(outs, case["outputs"]):
        assert_frame_matches(out, folder / name)


def bars(n: int, seed: int, start: str = "2024-01-01", freq: str = "D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    frame = pd.DataFrame({"timestamps": pd.date_range(start, periods=n, freq=freq)})
    frame["open"] = close * (1 + rng.normal(0, 0.002, n))
    frame["high"] = np.maximum(frame["open"], close) * 1.003
    frame["low"] = np.minimum(frame["open"], close) * 0.997
    frame["close"] = close
    frame["volume"] = rng.integers(1000, 5000, n).astype(float)
    frame["amount"] = frame["volume"] * close
    return frame


@pytest.fixture(scope="module")
def tiny_predictor() -> KronosPredictor:
    tok, pred = small_models(11)
    return KronosPredictor(pred, tok, device="cpu", max_context=48)


def test_predict_batch_of_unequal_histories_equals_one_by_one(tiny_predictor):
    frames = [bars(n, seed=n) for n in (20, 35, 60)]  # 60 > max_context 48: slides
    batch = tiny_predictor.predict_batch(
        [f[COLS] for f in frames], [f["timestamps"] for f in frames], None, 7,
        top_k=1, verbose=False,
    )  # fmt: skip
    for frame, out in zip(frames, batch):
        alone = tiny_predictor.predict(frame[COLS], frame["timestamps"], None, 7, top_k=1,
                                       verbose=False)  # fmt: skip
        pd.testing.assert_frame_equal(out, alone, rtol=1e-5)


def test_samples_quantiles_and_seed(tiny_predictor):
    frame = bars(30, seed=1)
    kwargs = dict(pred_len=5, T=1.0, top_p=0.9, sample_count=16, verbose=False)
    out, samples = tiny_predictor.predict(
        frame[COLS], frame["timestamps"], **kwargs, quantiles=[0.1, 0.5, 0.9],
        return_samples=True, seed=3,
    )  # fmt: skip
    assert samples.shape == (16, 5, 6)
    expected_cols = COLS + [f"{c}_q{q}" for q in ("10", "50", "90") for c in COLS]
    assert list(out.columns) == expected_cols
    np.testing.assert_allclose(out[COLS].to_numpy(), samples.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["close_q90"], np.quantile(samples[..., 3], 0.9, axis=0))
    assert (out["close_q10"] <= out["close_q50"]).all() and (
        out["close_q50"] <= out["close_q90"]
    ).all()
    again = tiny_predictor.predict(
        frame[COLS], frame["timestamps"], **kwargs, quantiles=[0.1, 0.5, 0.9], seed=3
    )
    other = tiny_predictor.predict(
        frame[COLS], frame["timestamps"], **kwargs, quantiles=[0.1, 0.5, 0.9], seed=4
    )
    pd.testing.assert_frame_equal(out, again)
    assert not out.equals(other)
    frames, batch_samples = tiny_predictor.predict_batch(
        [frame[COLS]] * 2, [frame["timestamps"]] * 2, None, return_samples=True, seed=0, **kwargs
    )
    assert len(frames) == 2 and batch_samples.shape == (2, 16, 5, 6)
    with pytest.raises(ForecastError, match="sample_count >= 2"):
        tiny_predictor.predict(frame[COLS], frame["timestamps"], pred_len=3, quantiles=[0.5])


def test_future_timestamps_are_inferred_or_refused(tiny_predictor, reference_dir):
    daily = bars(30, seed=2)
    out = tiny_predictor.predict(
        daily[COLS], daily["timestamps"], pred_len=3, top_k=1, verbose=False
    )
    assert list(out.index) == list(pd.date_range("2024-01-31", periods=3, freq="D"))
    weekdays = pd.DatetimeIndex(["2024-01-04", "2024-01-05", "2024-01-08", "2024-01-10"])
    assert list(infer_future_stamps(weekdays, 2)) == list(
        pd.to_datetime(["2024-01-11", "2024-01-12"])
    )
    hours = pd.DatetimeIndex(pd.date_range("2024-01-01 09:30", periods=5, freq="5min"))
    assert infer_future_stamps(hours, 1)[0] == pd.Timestamp("2024-01-01 09:55")
    one_day = hours.append(pd.date_range("2024-01-01 13:00", periods=4, freq="5min"))
    with pytest.raises(ForecastError, match="pass y_timestamp"):
        infer_future_stamps(one_day, 2)  # one day cannot show where the session ends
    # A-share-like 5-minute sessions: 09:35-11:30 and 13:05-15:00, Friday then Monday.
    real = pd.read_csv(REFERENCE_BARS, parse_dates=["timestamps"])["timestamps"]
    history, later = pd.DatetimeIndex(real[:120]), pd.DatetimeIndex(real[120:200])
    assert list(infer_future_stamps(history, 80)) == list(later)
    friday = pd.DatetimeIndex(
        [f"2024-06-21 {t}" for t in ("09:35", "09:40", "14:55", "15:00")]
        + [f"2024-06-20 {t}" for t in ("09:35", "09:40", "14:55", "15:00")]
    ).sort_values()
    assert list(infer_future_stamps(friday, 3)) == list(
        pd.to_datetime(["2024-06-24 09:35", "2024-06-24 09:40", "2024-06-24 14:55"])
    )
    # A DatetimeIndex on the frame is used when x_timestamp is not given.
    indexed = daily.set_index("timestamps")[COLS]
    pd.testing.assert_frame_equal(
        tiny_predictor.predict(indexed, pred_len=3, top_k=1, verbose=False), out
    )


def test_bad_frames_are_named(tiny_predictor):
    frame = bars(20, seed=3)
    broken = frame.copy()
    broken.loc[7, "close"] = np.nan
    with pytest.raises(
        ForecastError, match=r"df_list\[1\]: row 7 \(index 7\): column close is nan"
    ):
        tiny_predictor.predict_batch(
            [frame[COLS], broken[COLS]], [frame["timestamps"]] * 2, None, 3
        )
    with pytest.raises(ForecastError, match=r"price column\(s\) \['low'\]"):
        tiny_predictor.predict(frame[["open", "high", "close"]], frame["timestamps"], None, 3)
    with pytest.raises(ForecastError, match="y_timestamp has 2 rows, pred_len is 3"):
        tiny_predictor.predict(frame[COLS], frame["timestamps"], frame["timestamps"][:2], 3)


def test_bf16_forecast_stays_close_to_fp32():
    tok, pred = small_models(12)
    frame = bars(40, seed=5)
    fp32 = KronosPredictor(pred, tok, "cpu", 64).predict(
        frame[COLS], frame["timestamps"], None, 6, top_k=1, verbose=False
    )
    bf16 = KronosPredictor(pred, tok, "cpu", 64, precision="bf16").predict(
        frame[COLS], frame["timestamps"], None, 6, top_k=1, verbose=False
    )
    assert np.isfinite(bf16.to_numpy()).all()
    # Prices stay within a few percent: bf16 may flip near-tied greedy tokens, not the scale.
    rel = np.abs(bf16["close"] - fp32["close"]) / fp32["close"]
    assert rel.max() < 0.05


# --- runs -----------------------------------------------------------------------------------


def test_from_run_uses_the_runs_own_tokenizer(tmp_path):
    """The run keeps the tokenizer it trained with; a later change at the config's
    tokenizer_path does not change the forecast."""
    from kronos_engine import TrainConfig, TrainContextBuilder, Trainer

    tok_dir = tmp_path / "tok"
    torch.manual_seed(0)
    build_tokenizer("tiny").save_pretrained(tok_dir)
    cfg = TrainConfig(
        train_type="predictor", exp_dir=str(tmp_path / "exp"), tokenizer_path=str(tok_dir),
        max_steps=2, batch_size=4, lookback_window=20, predict_window=4, demo_length=120,
        val_interval=2, log_interval=1,
    )  # fmt: skip
    Trainer(TrainContextBuilder(cfg).build()).fit()
    run = find_predictor_run(tmp_path / "exp")
    assert run.tokenizer_dir == RunLayout(tmp_path / "exp" / "predictor").frozen_tokenizer
    frame = bars(30, seed=9)
    before = KronosPredictor.from_run(tmp_path / "exp", device="cpu").predict(
        frame[COLS], pred_len=4, x_timestamp=frame["timestamps"], top_k=1, verbose=False
    )
    torch.manual_seed(99)
    build_tokenizer("tiny").save_pretrained(tok_dir)  # the source folder changes later
    after = KronosPredictor.from_run(tmp_path / "exp" / "predictor", device="cpu").predict(
        frame[COLS], frame["timestamps"], None, 4, top_k=1, verbose=False
    )
    pd.testing.assert_frame_equal(before, after)
    with pytest.raises(ForecastError, match="no trained predictor"):
        find_predictor_run(tmp_path)
