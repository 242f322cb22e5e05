"""Two gloo processes under torchrun train the same model as one process with the same global
batch; only rank 0 writes files; the validation mean is exact over uneven shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

RUNNER = Path(__file__).with_name("dist_runner.py")


def _config(out: Path, batch_size: int, **extra) -> dict:
    cfg = {
        "train_type": "tokenizer",
        "output_dir": str(out),
        "exp_dir": str(out.parent),
        "demo_symbols": 2,
        "demo_length": 200,
        "lookback_window": 20,
        "predict_window": 4,
        "train_samples_per_epoch": 48,
        "val_samples": 21,  # odd: ranks get 11 and 10 windows
        "batch_size": batch_size,
        "grad_accum_steps": 2,
        "epochs": 2,
        "val_interval": 3,
        "ckpt_interval": 3,
        "model_preset": "tiny",
        "progress_bar": False,
        "log_interval": 1,
        "seed": 11,
        "device": "cpu",
    }
    cfg.update(extra)
    return cfg


def _launch(cfg: dict, nproc: int, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"cfg_{nproc}_{Path(cfg['output_dir']).name}.json"
    path.write_text(json.dumps(cfg))
    # The tree under test first (PYTHONPATH), not an installed kronos_engine.
    pythonpath = os.pathsep.join(filter(None, [str(RUNNER.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    if nproc == 1:
        cmd = [sys.executable, str(RUNNER), str(path)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(RUNNER),
            str(path),
        ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("train_type", ["tokenizer", "predictor"])
def test_two_gloo_processes_match_one_process(tmp_path, train_type):
    # zeta=0: the BSQ codebook entropy is a statistic of each process's batch and cannot
    # match a bigger batch exactly (see test_engine_loop); every other term is a sample mean.
    from kronos_engine.models import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer("tiny", zeta=0.0).save_pretrained(tmp_path / "tok")
    extra = {"pretrained_tokenizer": str(tok)}
    if train_type == "predictor":
        extra = {"train_type": "predictor", "tokenizer_path": str(tok), "teacher_forcing": True}
    one = _launch(_config(tmp_path / "one", batch_size=8, **extra), 1, tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(_config(tmp_path / "two", batch_size=4, **extra), 2, tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]

    r1 = json.loads((tmp_path / "one" / "losses_rank0.json").read_text())
    r2 = [json.loads((tmp_path / "two" / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert r2[0]["world"] == 2 and r1["world"] == 1
    assert r2[0]["losses"] == r2[1]["losses"]  # every rank logs the global loss
    # grad_accum_steps=2: gradients are all-reduced on every 2nd micro-batch only (no_sync).
    assert r2[0]["micro_batches"] == 12
    assert r2[0]["allreduce_micro"] == [2, 4, 6, 8, 10, 12]
    torch.testing.assert_close(r2[0]["losses"], r1["losses"], rtol=1e-5, atol=1e-6)
    metric = "val_recon_mse" if train_type == "tokenizer" else "val_loss"
    assert r2[0]["val"]["val_samples"] == r1["val"]["val_samples"] == 21
    assert r2[0]["val"][metric] == pytest.approx(r1["val"][metric], rel=1e-5)
    w1 = load_file(str(tmp_path / "one" / "final.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "final.safetensors"))
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 wrote files: one metrics file, no per-rank duplicates, one checkpoint tree.
    two_dir = tmp_path / "two"
    written = sorted(p.name for p in two_dir.iterdir())
    assert "metrics.jsonl" in written and "checkpoints" in written
    state = json.loads((two_dir / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    lines = (two_dir / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"train"' in ln]) == 6
