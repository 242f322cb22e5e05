"""Launching as users do: `--nprocs=N` (torch's elastic launcher, no torchrun typed) is the same
job as `torchrun --standalone`; two torchrun agents with a c10d rendezvous (two "machines") train
the same model as one process with the same global batch, and only the agent holding rank 0
writes the run; exit codes and a SIGTERM go through the `--nprocs` parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import faultinject as fi
import pytest
import torch
from safetensors.torch import load_file
from test_cli_pipeline import PIPELINE, TINY_YAML, check_ok, run, summary
from test_engine_distributed import RUNNER, _config
from test_faults_signals import BOUND_TORCHRUN_S, _check_stopped, _signal_run

NPROCS2 = [sys.executable, str(fi.TRAIN), "--nprocs=2"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_nprocs_is_the_same_job_as_torchrun_standalone(tmp_path_factory, tmp_path):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer", 2)  # torchrun --standalone
    out = tmp_path / "run"
    result = fi.run(fi.train_args("tokenizer", out), tmp_path / "logs", cmd=NPROCS2)
    assert result.returncode == 0, result
    fi.assert_same_run(out, reference)  # bit-identical weights, metrics and summary
    assert fi.summary(out)["world_size"] == 2
    assert result.stdout.count("training finished") == 1, result  # rank 0 reports


def test_nprocs_config_error_is_one_line_before_any_process(tmp_path):
    out = tmp_path / "run"
    args = fi.train_args("tokenizer", out) + ["--epochs=zero"]
    result = fi.run(args, tmp_path / "logs", cmd=NPROCS2)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == ["error: epochs: expected an integer, got 'zero'"]
    assert not out.exists()


@pytest.mark.parametrize("value", ["2", "0", "x"])
def test_nprocs_under_torchrun_or_not_a_count_is_a_usage_error(monkeypatch, capsys, value):
    from kronos_engine.cli.train import main

    if value == "2":
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code = main([f"--nprocs={value}", "--train_type=tokenizer"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --nprocs: "), line


@pytest.mark.parametrize(
    "fault,code,line",
    [
        # A user error on rank 1 mid-run: the worker exits 2 and so does the parent.
        ({"FAULT_FAIL_RANK": "1:2:data"}, 2, "error: rank 1: injected failure on rank 1 at step 2"),
        # A failed run (non-finite loss, the same on every rank): 1.
        ({"FAULT_NAN": "loss:3"}, 1, "error: step 3 (epoch 0): loss is nan"),
    ],
)
def test_nprocs_exit_code_is_the_failing_workers(tmp_path, fault, code, line):
    args = fi.train_args("tokenizer", tmp_path / "run")
    result = fi.run(args, tmp_path / "logs", cmd=NPROCS2, **fault)
    assert result.returncode == code, result
    assert line in result.stderr, result
    if code == 1:  # on every rank; with one rank failing, a peer may crash on the lost link
        assert "Traceback" not in result.stderr, result


def test_pipeline_with_nprocs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    args = ["--nprocs=2", "--config=tiny.yaml", "--batch_size=8", "--exp_dir=exp"]
    proc = run([sys.executable, PIPELINE, *args], tmp_path)
    check_ok(proc)
    assert proc.stdout.count("results in") == 2
    assert "Traceback" not in proc.stderr
    for stage in ("tokenizer", "predictor"):
        assert summary(tmp_path / "exp" / stage)["world_size"] == 2


def test_sigterm_to_the_nprocs_parent_stops_every_rank_with_one_checkpoint(tmp_path):
    args = fi.train_args("tokenizer", tmp_path / "run")
    out, result, elapsed = _signal_run(tmp_path, args, signal.SIGTERM, cmd=NPROCS2)
    assert result.returncode == 128 + signal.SIGTERM, result
    _check_stopped(out, result, elapsed, BOUND_TORCHRUN_S, world_size=2)
    assert result.stdout.count("stopped by SIGTERM") == 1


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _agent(node: Path, port: int, run_id: str, cfg: Path, node_rank: int | None):
    """One `torchrun` agent as a user starts it on each machine (here: its own working dir)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        f"--rdzv_id={run_id}",
    ]
    if node_rank is not None:
        cmd.append(f"--node_rank={node_rank}")
    node.mkdir()
    (node / "run").mkdir()  # rank 1's loss log goes there (dist_runner); rank 0 writes the run
    return subprocess.Popen(
        [*cmd, str(RUNNER), str(cfg)],
        cwd=node,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_nodes_with_c10d_rendezvous_match_one_process(tmp_path):
    from kronos_engine.models import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer("tiny", zeta=0.0).save_pretrained(tmp_path / "tok")  # see engine_dist.
    extra = {"pretrained_tokenizer": str(tok), "epochs": 1}
    one_cfg = tmp_path / "one.json"
    one_cfg.write_text(json.dumps(_config(tmp_path / "one", batch_size=8, **extra)))
    one = subprocess.run(
        [sys.executable, str(RUNNER), str(one_cfg)], env=_env(), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]

    # Relative output/exp dirs: each "machine" has its own disk (its working dir).
    cfg = tmp_path / "two_nodes.json"
    cfg.write_text(json.dumps(_config(Path("run"), batch_size=4, **extra)))
    port, run_id = _free_port(), uuid.uuid4().hex
    agents = [
        _agent(tmp_path / "node_a", port, run_id, cfg, 0),
        _agent(tmp_path / "node_b", port, run_id, cfg, None),  # --node_rank omitted
    ]
    for agent in agents:
        output, _ = agent.communicate(timeout=240)
        assert agent.returncode == 0, output[-3000:]

    r1 = json.loads((tmp_path / "one" / "losses_rank0.json").read_text())
    runs = [tmp_path / node / "run" for node in ("node_a", "node_b")]
    (main,) = [r for r in runs if (r / "losses_rank0.json").exists()]
    (other,) = [r for r in runs if r != main]
    r2 = [json.loads((main / "losses_rank0.json").read_text())]
    r2.append(json.loads((other / "losses_rank1.json").read_text()))
    assert r2[0]["world"] == 2 and r1["world"] == 1
    assert r2[0]["losses"] == r2[1]["losses"]
    torch.testing.assert_close(r2[0]["losses"], r1["losses"], rtol=1e-5, atol=1e-6)
    assert r2[0]["val"]["val_samples"] == r1["val"]["val_samples"] == 21
    assert r2[0]["val"]["val_recon_mse"] == pytest.approx(r1["val"]["val_recon_mse"], rel=1e-5)
    w1 = load_file(str(tmp_path / "one" / "final.safetensors"))
    w2 = load_file(str(main / "final.safetensors"))
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-5, msg=key)
    # Only the agent holding rank 0 wrote the run; the other node only has rank 1's loss log.
    written = {p.name for p in main.iterdir()}
    assert {"metrics.jsonl", "checkpoints", "config.yaml", "final.safetensors"} <= written
    assert sorted(p.name for p in other.iterdir()) == ["losses_rank1.json"]


def test_the_job_exit_code_is_the_first_failing_workers():
    from kronos_engine.cli.launch import failure_exit_code

    assert failure_exit_code([(5, 143), (5, 2)]) == 2  # rank 0 stopped by the agent
    assert failure_exit_code([(5, 1), (5, 2)]) == 2  # a peer crashed on the lost link
    assert failure_exit_code([(4, 1), (5, 2)]) == 1  # the earlier one
    assert failure_exit_code([(5, -9), (5, 143)]) == 137  # killed by SIGKILL
    assert failure_exit_code([(5, 143), (5, 143)]) == 143  # preempted
