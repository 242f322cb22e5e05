"""Experiment trackers with the real libraries, local/offline only: TensorBoard event files read
back with TensorBoard's reader, MLflow runs read back from a SQLite store with MLflow's client,
W&B and Comet in their offline modes; a resumed run continues the same tracked run."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest
from engine_helpers import run, save_random_tokenizer, tiny_cfg
from toolbox_helpers import Crash, CrashAfterStep, assert_resume_is_bit_exact, records

from kronos_engine.errors import ConfigError


def _train(recs, key="loss"):
    return {r["step"]: r[key] for r in recs if r["type"] == "train"}


def _val(recs, key="val_recon_mse"):
    return {r["step"]: r[key] for r in recs if r["type"] == "val"}


# ---------------------------------------------------------------- TensorBoard


def tensorboard_scalars(output_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = list((output_dir / "tensorboard").iterdir())  # one tracked run
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = [t for t in acc.Tags()["scalars"] if t != "train/samples_per_s"]  # wall clock
    out = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags}
    return out, acc


def test_tensorboard_gets_the_metrics_records_and_the_config(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams import plugin_data_pb2

    ctx = run(tiny_cfg(tmp_path, loggers=["tensorboard"], max_steps=6, val_interval=3))
    scalars, acc = tensorboard_scalars(ctx.output_dir)
    recs = records(ctx.output_dir)
    for tag, expected in [("train/loss", _train(recs)), ("val/val_recon_mse", _val(recs))]:
        got = dict(scalars[tag])
        assert got.keys() == expected.keys() and len(scalars[tag]) == len(expected)
        assert all(got[s] == pytest.approx(v, rel=1e-6) for s, v in expected.items())
    assert {"train/lr", "train/grad_norm", "train/bsq_loss", "val/best"} <= set(scalars)
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["seed"].number_value == 7 and hparams["train_type"].string_value == "tokenizer"


def test_a_resumed_run_continues_the_same_tensorboard_run_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    common = dict(loggers=["tensorboard"], max_steps=8, ckpt_interval=2, val_interval=3)
    straight = run(tiny_cfg(tmp_path / "a", **common))
    cfg = tiny_cfg(tmp_path / "b", **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(5))  # events up to step 5, checkpoint at step 4
    resumed = run(tiny_cfg(tmp_path / "b", resume=str(cfg.resolved_output_dir), **common))
    got, _ = tensorboard_scalars(resumed.output_dir)  # still one run folder
    want, _ = tensorboard_scalars(straight.output_dir)
    assert got.keys() == want.keys()
    for tag in want:  # step 5 was purged and re-logged once: the same series
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
        assert [v for _, v in got[tag]] == [v for _, v in want[tag]], tag


# ---------------------------------------------------------------- MLflow


def mlflow_run(output_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "kronos-engine"]
    (tracked,) = client.search_runs([experiment.experiment_id])  # one tracked run
    return client, tracked


def history(client, run_id, key):
    """step -> value, the last value logged at each step."""
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_mlflow_run_has_the_records_the_config_and_best(tmp_path):
    pytest.importorskip("mlflow")
    cfg = tiny_cfg(tmp_path, loggers=["mlflow"], max_steps=6, val_interval=3, run_name="demo")
    ctx = run(cfg)
    client, tracked = mlflow_run(ctx.output_dir)
    recs = records(ctx.output_dir)
    assert history(client, tracked.info.run_id, "train/loss") == _train(recs)
    assert history(client, tracked.info.run_id, "val/val_recon_mse") == _val(recs)
    assert history(client, tracked.info.run_id, "train/lr") == _train(recs, "lr")
    params = tracked.data.params
    assert params["seed"] == "7" and params["max_steps"] == "6" and "resume" not in params
    assert tracked.info.run_name == "demo" and tracked.info.status == "FINISHED"
    best = {a.path for a in client.list_artifacts(tracked.info.run_id, "best")}
    assert {"best/model.safetensors", "best/config.json", "best/best.json"} <= best


def test_resume_with_lora_ema_and_trackers_is_exact_and_continues_the_tracked_runs(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    tok = save_random_tokenizer(tmp_path / "tok")
    common = dict(train_type="predictor", tokenizer_path=str(tok), finetune_method="lora")
    common.update(lr=1e-2, lora_r=4, dropout=0.1, lora_dropout=0.1, ema=True, ema_decay=0.8)
    common.update(loggers=["tensorboard", "mlflow"], ckpt_interval=2, keep_last=20)
    common.update(val_interval=2, max_steps=6)
    straight, resumed = assert_resume_is_bit_exact(tmp_path, crash_step=3, **common)
    client_s, run_s = mlflow_run(straight.output_dir)
    client_r, run_r = mlflow_run(resumed.output_dir)  # still one run: the same id continued
    assert run_r.info.status == "FINISHED"
    for key in ("train/loss", "train/s1_loss", "val/val_loss", "val/best"):
        assert history(client_r, run_r.info.run_id, key) == history(
            client_s, run_s.info.run_id, key
        ), key
    state = json.loads(
        (resumed.output_dir / "checkpoints" / "step_2" / "trainer_state.json").read_text()
    )
    assert state["callbacks"]["MLflowTracker"]["run_id"] == run_r.info.run_id
    got, _ = tensorboard_scalars(resumed.output_dir)
    want, _ = tensorboard_scalars(straight.output_dir)
    assert got == want


# ---------------------------------------------------------------- W&B and Comet, offline


def test_wandb_offline_run_is_continued_by_its_id(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = dict(loggers=["wandb"], tracking_mode="offline", max_steps=4, ckpt_interval=2)
    cfg = tiny_cfg(tmp_path, **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(3))
    resumed = run(tiny_cfg(tmp_path, resume=str(cfg.resolved_output_dir), **common))
    wandb.teardown()  # wandb's background service writes the files: let it finish them
    state = json.loads(
        (resumed.output_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text()
    )
    run_id = state["callbacks"]["WandbTracker"]["run_id"]
    folders = sorted((resumed.output_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    # wandb has no public reader for offline files (its Go core writes them): look for what the
    # records carry, the metric names, the config and the step-4 loss as wandb encodes it.
    first = (folders[0] / f"run-{run_id}.wandb").read_bytes()
    second = (folders[1] / f"run-{run_id}.wandb").read_bytes()
    assert b"lookback_window" in first and b"train/loss" in first
    loss4 = json.dumps(_train(records(resumed.output_dir))[4]).encode()
    assert loss4 in second and loss4 not in first


def test_comet_offline_experiment_is_continued_by_its_key(tmp_path):
    pytest.importorskip("comet_ml")
    common = dict(loggers=["comet"], tracking_mode="offline", max_steps=4, ckpt_interval=2)
    cfg = tiny_cfg(tmp_path, **common)
    with pytest.raises(Crash):
        run(cfg, CrashAfterStep(3))
    resumed = run(tiny_cfg(tmp_path, resume=str(cfg.resolved_output_dir), **common))
    state = json.loads(
        (resumed.output_dir / "checkpoints" / "step_4" / "trainer_state.json").read_text()
    )
    key = state["callbacks"]["CometTracker"]["run_id"]
    archives = sorted((resumed.output_dir / "comet").glob("*.zip"))
    assert archives
    text = ""
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            text += "".join(zf.read(n).decode("utf-8", "replace") for n in zf.namelist())
    assert key in text and "train/loss" in text


# ---------------------------------------------------------------- missing packages


@pytest.mark.parametrize(
    "logger,module,extra",
    [("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow"),
     ("wandb", "wandb", "wandb"), ("comet", "comet_ml", "comet")],
)  # fmt: skip
def test_a_missing_tracker_package_is_one_clear_line(tmp_path, monkeypatch, logger, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without it gives
    with pytest.raises(ConfigError) as info:
        run(tiny_cfg(tmp_path, loggers=[logger]))
    assert str(info.value) == (
        f"loggers: '{logger}' needs the '{module}' package; install it with "
        f"pip install 'kronos-engine[{extra}]'"
    )
    assert not (tmp_path / "exp").exists()


def test_unknown_logger_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="loggers: 'neptune' is not allowed"):
        tiny_cfg(tmp_path, loggers=["neptune"])
