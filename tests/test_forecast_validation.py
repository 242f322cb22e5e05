"""Forecast-metric validation during training: metrics in metrics.jsonl, best/ chosen by a
forecast metric, the same numbers as the evaluation library on the saved model, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import run, save_random_tokenizer, tiny_cfg, weights

from kronos_engine import TrainCallback
from kronos_engine.data import build_datasets
from kronos_engine.errors import ConfigError
from kronos_engine.evaluation.baselines import NaiveForecaster
from kronos_engine.evaluation.origins import plan_origins, subset_by_date
from kronos_engine.evaluation.rolling import ForecastOptions, run_rolling
from kronos_engine.forecasting import KronosPredictor

ORIGINS = 16


def _cfg(tmp_path, tok, **extra):
    values = dict(
        train_type="predictor",
        tokenizer_path=str(tok),
        demo_symbols=4,
        val_interval=2,
        forecast_val_origins=ORIGINS,
        best_metric="val_rank_ic",
        best_mode="max",
        dropout=0.1,
    )
    values.update(extra)
    return tiny_cfg(tmp_path, **values)


def _records(output_dir):
    out = []
    for line in (output_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("samples_per_s", None)
        out.append(record)
    return out


def test_best_checkpoint_is_chosen_by_a_forecast_metric(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    cfg = _cfg(tmp_path, tok, epochs=1)
    ctx = run(cfg)
    vals = [r for r in _records(ctx.output_dir) if r["type"] == "val"]
    assert [r["step"] for r in vals] == [2, 4, 6]
    for r in vals:
        assert {"val_loss", "val_mae", "val_mase", "val_skill", "val_rank_ic", "val_ic"} <= set(r)
        assert r["val_origins"] == ORIGINS
    best_rank_ic = max(r["val_rank_ic"] for r in vals)
    first_best = next(r for r in vals if r["val_rank_ic"] == best_rank_ic)
    best = json.loads((ctx.output_dir / "best" / "best.json").read_text())
    assert best["metric"] == "val_rank_ic" and best["step"] == first_best["step"]
    assert best["value"] == best_rank_ic and vals[-1]["best"] == best_rank_ic
    summary = json.loads((ctx.output_dir / "summary.json").read_text())
    assert summary["metric_name"] == "val_rank_ic" and summary["best_step"] == best["step"]

    # The logged numbers are the evaluation library's, on the model saved in best/.
    store = build_datasets(cfg).val.store
    origins = subset_by_date(store, plan_origins(store, 20, 4), ORIGINS)
    predictor = KronosPredictor.from_pretrained(tok, ctx.output_dir / "best", device="cpu")
    opts = ForecastOptions(pred_len=4, lookback=20, seed=cfg.seed)
    forecasters = {"model": predictor, "naive": NaiveForecaster()}
    overall = run_rolling(store, origins, forecasters, opts, progress=False).overall()["model"]
    assert overall["rank_ic"] == pytest.approx(best_rank_ic, abs=1e-12)
    assert overall["mae"] == pytest.approx(first_best["val_mae"], rel=1e-9)


def test_best_mode_min_on_a_forecast_error(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    ctx = run(_cfg(tmp_path, tok, epochs=1, best_metric="val_mae", best_mode="min"))
    vals = [r for r in _records(ctx.output_dir) if r["type"] == "val"]
    best = json.loads((ctx.output_dir / "best" / "best.json").read_text())
    assert best["value"] == min(r["val_mae"] for r in vals)


class Crash(Exception):
    pass


class CrashAfterStep(TrainCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, ctx):
        if ctx.global_step == self.step:
            raise Crash(f"killed after step {self.step}")


def test_resume_is_bit_exact_with_forecast_validation_on(tmp_path):
    tok = save_random_tokenizer(tmp_path / "tok")
    common = dict(ckpt_interval=1, keep_last=20, forecast_val_sample_count=3, epochs=1)
    straight = run(_cfg(tmp_path / "straight", tok, **common))
    crashed = _cfg(tmp_path / "crashed", tok, **common)
    with pytest.raises(Crash):
        run(crashed, CrashAfterStep(3))
    resumed = run(
        _cfg(tmp_path / "crashed", tok, resume=str(crashed.resolved_output_dir), **common)
    )
    assert resumed.global_step == straight.global_step == 6
    records = _records(straight.output_dir)
    assert records == _records(resumed.output_dir)
    assert any("val_crps" in r for r in records)
    ws, wr = weights(straight), weights(resumed)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert (resumed.best_step, resumed.best_metric) == (straight.best_step, straight.best_metric)


@pytest.mark.parametrize(
    "values,needle",
    [
        (dict(train_type="tokenizer", forecast_val_origins=8), "forecast_val_origins"),
        (dict(train_type="predictor", best_metric="val_rank_ic", best_mode="max"), "best_metric"),
        (dict(train_type="predictor", best_mode="max"), "best_mode"),
        (dict(train_type="predictor", forecast_val_origins=0), "forecast_val_origins"),
    ],
)
def test_bad_forecast_validation_configs(tmp_path, values, needle):
    with pytest.raises(ConfigError, match=f"^{needle}: "):
        tiny_cfg(tmp_path, **values)


def test_every_rank_gets_the_same_forecast_metrics_under_torchrun(tmp_path):
    """Rank 0 forecasts and the values are all-reduced: every rank takes the same best/ and
    early-stopping decision."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    runner = Path(__file__).with_name("dist_runner.py")
    tok = save_random_tokenizer(tmp_path / "tok")
    out = tmp_path / "two"
    cfg = _cfg(tmp_path, tok, epochs=1, device="cpu", best_metric="val_mae", best_mode="min")
    values = {**cfg.to_dict(), "output_dir": str(out), "early_stopping_patience": 1}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(values))
    paths = os.pathsep.join([str(runner.parent), str(runner.parent.parent)])  # this checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": paths}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(runner), str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["val"] == ranks[1]["val"] and "val_mae" in ranks[0]["val"]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # both stopped at the same step
    vals = [r for r in _records(out) if r["type"] == "val"]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["metric"] == "val_mae" and best["value"] == min(r["val_mae"] for r in vals)
