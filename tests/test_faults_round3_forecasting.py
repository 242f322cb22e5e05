"""Bad input, third round (issue 19), forecasting: the sampling options, `pred_len`, the lookback
against `max_context`, `--as_of`, `--device` and the names of an evaluation.

One set of rules (`kronos_engine.forecasting.options`, the device rule in `config.rules`) serves
the API, `scripts/predict.py`, `scripts/evaluate.py` and the forecast validation: a bad value is
one line `error: <flag>: ...` naming what is allowed, exit code 2, before any work, every file
unchanged. A forecast longer than `max_context` is made (the window slides), the KV-cached path
exactly as the recomputed one and as a plain reference loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kronos_engine.callbacks.forecast_validation import ForecastValidation
from round3_helpers import finished_csv_run, one_error, private_copy
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot
from test_forecasting import bars, random_stamps, small_models

from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.config.rules import resolve_device
from kronos_engine.data import generate_demo_frames
from kronos_engine.errors import ForecastError
from kronos_engine.evaluation.rolling import ForecastOptions
from kronos_engine.forecasting import KronosPredictor, SamplingOptions, generate
from kronos_engine.forecasting.generation import generate_ids
from kronos_engine.models import build_predictor, build_tokenizer

FAST_EVAL = ["--max_origins", "3", "--no_plots", "--no_progress"]
BEYOND = f"cuda:{torch.cuda.device_count()}"  # one past the last CUDA device, or any without


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """`klines/` (3 CSV symbols of 240 days) and `exp/predictor/`: a tiny predictor fine-tuned
    for 2 steps on them (lookback 20, predict_window 4)."""
    return finished_csv_run(tmp_path_factory.mktemp("round3_fc"))


@pytest.fixture
def case(finished, tmp_path) -> Path:
    return private_copy(finished, tmp_path)


_one_error = one_error


# --- predict and evaluate refuse bad options with one line ---------------------------------

SAMPLING_CASES = {
    "T_zero": (["--T", "0"], ["--T:", "> 0"]),
    "T_negative": (["--T", "-1"], ["--T:", "> 0"]),
    "T_nan": (["--T", "nan"], ["--T:", "finite", "nan"]),
    "top_p_above_1": (["--top_p", "1.5"], ["--top_p:", "(0, 1]", "1.5"]),
    "top_p_negative": (["--top_p", "-0.5"], ["--top_p:", "(0, 1]"]),
    "top_k_negative": (["--top_k", "-3"], ["--top_k:", ">= 0", "-3"]),
    "batch_size_zero": (["--batch_size", "0"], ["--batch_size:", ">= 1"]),
    "seed_negative": (["--seed", "-1"], ["--seed:", "[0, 2**63 - 1]"]),
    "pred_len_huge": (["--pred_len", str(10**12)], ["--pred_len:", "[1, 100000]"]),
    "device_tpu": (["--device", "tpu0"], ["--device:", "'tpu0'", "auto, cpu"]),
    "device_beyond": (["--device", BEYOND], ["--device:", BEYOND, "auto, cpu"]),
}

PREDICT_CASES = {
    **SAMPLING_CASES,
    "quantiles_one_column": (
        ["--sample_count", "3", "--quantiles", "0.1,0.1000001"],
        ["--quantiles:", "0.1 and 0.1000001", "close_q10"],
    ),
    "quantiles_twice": (
        ["--sample_count", "3", "--quantiles", "0.9,0.9"],
        ["--quantiles:", "0.9 is given twice"],
    ),
    "lookback_above_max_context": (
        ["--lookback", "600"],
        [
            "--lookback: 600 exceeds the run's max_context 512",
            "raise --max_context to at least 600",
        ],
    ),
    "run_lookback_above_max_context": (
        ["--max_context", "10"],
        ["--lookback: 20 (the run's lookback_window) exceeds --max_context 10"],
    ),
    "as_of_garbage": (["--as_of", "garbage"], ["--as_of:", "'garbage'", "2024-03-01"]),
    "as_of_with_offset": (
        ["--as_of", "2018-06-01T00:00:00+00:00"],
        ["--as_of:", "time zone", "wall-clock"],
    ),
}

EVALUATE_CASES = {
    **SAMPLING_CASES,
    "max_context_below_lookback": (
        ["--max_context", "10"],
        ["--lookback: 20 (the run's lookback_window) exceeds --max_context 10"],
    ),
    "name_of_a_baseline": (["--name", "naive"], ["--name:", "'naive'", "naive baseline"]),
    "baseline_twice": (["--baselines", "naive,naive"], ["--baselines:", "more than once"]),
    "drift_twice": (["--baselines", "drift,naive,drift"], ["--baselines:", "'drift'"]),
}


@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_refuses_bad_options_with_one_line(case, capsys, name):
    flags, needles = PREDICT_CASES[name]
    before = snapshot(case)
    code = predict_main(
        ["--exp_dir", str(case / "exp" / "predictor"), "--output", str(case / "f.csv"), *flags]
    )
    _one_error(capsys, *needles)
    assert code == EXIT_USAGE
    _assert_untouched(before, snapshot(case))


@pytest.mark.parametrize("name", sorted(EVALUATE_CASES))
def test_evaluate_refuses_bad_options_with_one_line(case, capsys, name):
    flags, needles = EVALUATE_CASES[name]
    before = snapshot(case)
    code = evaluate_main(
        ["--exp_dir", str(case / "exp" / "predictor"), "--output", str(case / "eval"),
         *FAST_EVAL, *flags]
    )  # fmt: skip
    _one_error(capsys, *needles)
    assert code == EXIT_USAGE
    _assert_untouched(before, snapshot(case))


def test_a_compare_model_named_like_a_baseline_is_refused(case, capsys):
    before = snapshot(case)
    predictor = case / "exp" / "predictor"
    code = evaluate_main(
        ["--exp_dir", str(predictor), "--output", str(case / "eval"), *FAST_EVAL,
         "--baselines", "naive", "--compare", f"drift={predictor}"]
    )  # fmt: skip
    _one_error(capsys, "--compare:", "'drift'", "drift baseline")
    assert code == EXIT_USAGE
    _assert_untouched(before, snapshot(case))


def test_cuda_without_cuda_is_one_line(case, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = snapshot(case)
    code = predict_main(
        ["--exp_dir", str(case / "exp" / "predictor"), "--output", str(case / "f.csv"),
         "--device", "cuda"]
    )  # fmt: skip
    _one_error(capsys, "--device: 'cuda'", "no CUDA device", "auto, cpu")
    assert code == EXIT_USAGE
    _assert_untouched(before, snapshot(case))


def test_the_device_rule_names_what_this_machine_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1", "--device") == torch.device("cuda:1")
    assert resolve_device(None).type == "cuda" and resolve_device("cpu").type == "cpu"
    with pytest.raises(ForecastError, match=r"--device: 'cuda:7' is beyond the 2 CUDA"):
        resolve_device("cuda:7", "--device", ForecastError)
    with pytest.raises(ForecastError, match=r"auto, cpu, cuda, cuda:0 \.\.\. cuda:1"):
        resolve_device("cuda:2", "--device", ForecastError)
    with pytest.raises(ForecastError, match="device: 'tpu0' is not a device"):
        resolve_device("tpu0", "device", ForecastError)


# --- the API and the libraries under the commands follow the same rules --------------------


@pytest.fixture(scope="module")
def tiny() -> KronosPredictor:
    torch.manual_seed(0)
    return KronosPredictor(
        build_predictor("tiny"), build_tokenizer("tiny"), device="cpu", max_context=16
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(T=0.0), r"^T: "),
        (dict(T=float("nan")), r"^T: .*finite"),
        (dict(T=-1), r"^T: "),
        (dict(top_p=1.5), r"^top_p: must lie in \(0, 1\]"),
        (dict(top_p=-0.5), r"^top_p: "),
        (dict(top_p=0.0), r"^top_p: "),
        (dict(top_k=-3), r"^top_k: must be an integer >= 0"),
        (dict(top_k=2.5), r"^top_k: "),
        (dict(sample_count=0), r"^sample_count: "),
        (dict(seed=-1), r"^seed: .* or None"),
        (dict(seed=1.5), r"^seed: "),
        (dict(sample_count=3, quantiles=[0.1, 0.1000001]), r"^quantiles: 0\.1 and 0\.1000001"),
        (dict(sample_count=3, quantiles=[0.0]), r"^quantiles: each must lie strictly"),
        (dict(pred_len=10**12), r"^pred_len: must be an integer in \[1, 100000\]"),
        (dict(pred_len=90_000), r"^pred_len: 90000 bars after .* past the last timestamp"),
    ],
)
def test_the_api_refuses_what_the_commands_refuse(tiny, kwargs, needle):
    df = bars(12, 1).astype({"timestamps": "datetime64[ns]"})  # ns: pandas ends in 2262
    with pytest.raises(ForecastError, match=needle):
        tiny.predict(df, verbose=False, **{"pred_len": 3, **kwargs})


def test_the_api_refuses_a_device_it_does_not_have():
    tok, pred = build_tokenizer("tiny"), build_predictor("tiny")
    for device in ("tpu0", BEYOND):
        with pytest.raises(ForecastError, match=f"^device: '{device}'"):
            KronosPredictor(pred, tok, device=device)


def test_the_api_says_when_a_history_is_longer_than_max_context(tiny):
    with pytest.warns(UserWarning, match="history of 20 bars is longer than max_context 16"):
        tiny.predict(bars(20, 2), pred_len=2, top_k=1, verbose=False)


def test_the_libraries_refuse_bad_counts_instead_of_changing_them():
    with pytest.raises(ForecastError, match="batch_size: must be an integer >= 1, got 0"):
        ForecastOptions(pred_len=4, lookback=20, batch_size=0)
    with pytest.raises(ForecastError, match="^T: "):
        ForecastOptions(pred_len=4, lookback=20, T=0.0)
    with pytest.raises(ForecastError, match="forecast_val_sample_count: .* got 0"):
        ForecastValidation(origins=8, sample_count=0)
    with pytest.raises(ForecastError, match="forecast_val_sample_count: .* got 1.5"):
        ForecastValidation(origins=8, sample_count=1.5)  # was read as 1
    assert SamplingOptions(seed=2**63 - 1).with_seed(2**63 + 4).seed == 4  # derived seeds wrap


# --- pred_len beyond max_context: made, exactly -----------------------------------------------


def _reference_paths(tok, pred, x, stamps, pred_len, max_context):
    """The public loop as written, greedy, for one history `x` `(C, 6)`: each step runs the
    last `max_context` ids; then the forecast is decoded block by block from its end, each
    block of up to `max_context` rows from the `max_context` ids ending with it (the last
    block is the public decode)."""
    s1, s2 = tok.encode(x[None].clamp(-5, 5), half=True)
    for _ in range(pred_len):
        end = s1.shape[1]
        start = max(0, end - max_context)
        logits, hidden = pred.decode_s1(s1[:, start:], s2[:, start:], stamps[None, start:end])
        n1 = logits[:, -1].argmax(-1, keepdim=True)
        n2 = pred.decode_s2(hidden, n1)[:, -1].argmax(-1, keepdim=True)
        s1, s2 = torch.cat([s1, n1], 1), torch.cat([s2, n2], 1)
    total, blocks = s1.shape[1], []
    for back in range(0, pred_len, max_context):
        end = total - back
        window = min(end, max_context)
        z = tok.decode([s1[:, end - window : end], s2[:, end - window : end]], half=True)
        blocks.insert(0, z[:, -min(max_context, pred_len - back) :])
    return s1[0, -pred_len:], torch.cat(blocks, dim=1)[0]


@pytest.mark.parametrize("context, max_context, pred_len", [(10, 16, 37), (20, 16, 40), (5, 8, 24)])
@torch.no_grad()
def test_a_forecast_longer_than_max_context_is_exact(context, max_context, pred_len):
    tok, pred = small_models(3)
    x = torch.randn(context, 6, generator=torch.Generator().manual_seed(4))
    stamps = random_stamps(context + pred_len, 5)
    ids, expected = _reference_paths(tok, pred, x, stamps, pred_len, max_context)
    for use_cache in (True, False):
        paths = generate(tok, pred, [x], [stamps], pred_len, max_context, top_k=1,
                         use_cache=use_cache)  # fmt: skip
        assert paths.shape == (1, 1, pred_len, 6)
        torch.testing.assert_close(paths[0, 0], expected, atol=1e-5, rtol=1e-4)
        s1, _ = generate_ids(
            tok, pred, [x], [stamps], pred_len, SamplingOptions(top_k=1),
            max_context=max_context, clip=5.0, use_cache=use_cache,
        )  # fmt: skip
        assert torch.equal(s1[0, -pred_len:], ids)


@torch.no_grad()
def test_unequal_histories_longer_than_max_context_equal_one_by_one():
    tok, pred = small_models(6)
    g = torch.Generator().manual_seed(7)
    lengths, pred_len, max_context = [9, 25, 4], 30, 12
    contexts = [torch.randn(n, 6, generator=g) for n in lengths]
    stamps = [random_stamps(n + pred_len, n) for n in lengths]
    batch = generate(tok, pred, contexts, stamps, pred_len, max_context, top_k=1)
    for i in range(len(lengths)):
        alone = _reference_paths(tok, pred, contexts[i], stamps[i], pred_len, max_context)[1]
        torch.testing.assert_close(batch[i, 0], alone, atol=1e-5, rtol=1e-4)


def test_the_api_forecasts_past_max_context(tiny):
    df = bars(12, 3)
    frame = tiny.predict(df, pred_len=40, top_k=1, verbose=False)
    assert len(frame) == 40 and np.isfinite(frame.to_numpy()).all()
    recomputed = KronosPredictor(tiny.model, tiny.tokenizer, "cpu", 16, use_cache=False)
    expected = recomputed.predict(df, pred_len=40, top_k=1, verbose=False)
    pd.testing.assert_frame_equal(frame, expected, atol=1e-4, rtol=1e-4)


def test_predict_and_evaluate_forecast_past_max_context(case, capsys):
    predictor, out = case / "exp" / "predictor", case / "f.csv"
    code = predict_main(
        ["--exp_dir", str(predictor), "--output", str(out), "--max_context", "8",
         "--lookback", "8", "--pred_len", "20", "--top_k", "1"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert table.groupby("symbol").size().tolist() == [20, 20, 20]
    assert np.isfinite(table.drop(columns=["symbol", "timestamp"]).to_numpy()).all()
    code = evaluate_main(
        ["--exp_dir", str(predictor), "--output", str(case / "eval"), *FAST_EVAL,
         "--max_context", "8", "--lookback", "8", "--pred_len", "10", "--top_k", "1"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((case / "eval" / "metrics.json").read_text())
    assert "kronos" in json.dumps(metrics) and "naive" in json.dumps(metrics)


def test_the_baselines_follow_the_api_rules_instead_of_fixing_values_up():
    """`NaiveForecaster.predict_batch(sample_count=0)` was silently run with 1."""
    from kronos_engine.evaluation.baselines import NaiveForecaster

    frame = generate_demo_frames(1, 30, "day", seed=1)["DEMO000"]
    args = ([frame.drop(columns=["timestamps"])], [frame["timestamps"]], None, 3)
    with pytest.raises(ForecastError, match="sample_count"):
        NaiveForecaster().predict_batch(*args, sample_count=0)
    with pytest.raises(ForecastError, match="pred_len"):
        NaiveForecaster().predict_batch(args[0], args[1], None, 0)
    with pytest.raises(ForecastError, match="both give the column"):
        NaiveForecaster().predict_batch(*args, quantiles=[0.1, 0.1000001])
    (out,) = NaiveForecaster().predict_batch(*args, quantiles=[0.1])
    assert (out["close_q10"] == out["close"]).all() and len(out) == 3
