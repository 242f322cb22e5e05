"""Fault injection for `tests/test_faults_*.py`, and the harness that drives the real CLI.

The injected code runs inside `scripts/train.py` subprocesses, given on the command line as
`--callbacks=faultinject:Faults` and `--strategy=faultinject:FaultyTokenizer` (or
`FaultyPredictor`) with `tests/` on PYTHONPATH. The engine has no test hooks: faults are chosen by
environment variables, and without them these classes change nothing, so an uninterrupted
reference run uses the very same flags and must produce the very same bytes.

FAULT_KILL: one point where the process SIGKILLs itself (like the OOM killer or a node loss)
  batch_end:K         after the first micro-batch of step K: mid accumulation window, mid-epoch
  step_end:K          at the end of step K, right after its checkpoint was written
  ckpt_write:K        inside the checkpoint write of step K: model, optimizer and scheduler files
                      are in the temporary folder, trainer_state, manifest and rename are not
  ckpt_write_epoch:K  the same for the epoch-end re-save of step K (a step_K folder exists)
  val:K:B             in the B-th batch of the validation pass at step K
  ckpt_op:K:OP        at one low-level operation of the checkpoint write of step K; OP is one of
                      CKPT_OPS (torn files are cut to half their size before the kill)
FAULT_NAN: `loss:K[:inf]` / `grad:K` / `val:K` make the loss / the gradient / the validation
  metric non-finite at step K
FAULT_FAIL_RANK: `R:K`, `R:setup` or `R:val:K`, optionally ending in `:data`, raises
  RuntimeError (or DataError) on rank R only: at the end of step K, in the strategy's setup
  (before training) or in the validation pass at step K; the other ranks carry on
FAULT_SLEEP: seconds to sleep after every micro-batch, so that a test can send a signal mid-run
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kronos_engine.strategies.predictor_next_token import PredictorNextTokenStrategy
from kronos_engine.strategies.tokenizer_recon import TokenizerReconStrategy

import kronos_engine.run.checkpoints as store_module
import kronos_engine.training.resume as resume_module
from kronos_engine.callback import TrainCallback

CKPT_OPS = (
    "model_torn",  # model.safetensors half written
    "optimizer_torn",  # optimizer.pt half written
    "state_written",  # trainer_state.json written, no config.yaml / manifest yet
    "manifest_torn",  # manifest.json half written
    "before_rename",  # complete temporary folder, not yet renamed
    "between_renames",  # re-save of an existing step: old folder moved aside, new not in place
    "mid_prune",  # the new folder is in place, the oldest one is half deleted
)

_RUN: dict[str, Any] = {"ctx": None}


def _spec(name: str) -> list[str]:
    value = os.environ.get(name, "")
    return value.split(":") if value else []


def _die(where: str) -> None:
    sys.stderr.write(f"faultinject: SIGKILL {where}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _step() -> int:
    ctx = _RUN["ctx"]
    return -1 if ctx is None else ctx.global_step


class Faults(TrainCallback):
    """Kill points in the training loop, a failing rank and a slow-down (see the module doc)."""

    def __init__(self) -> None:
        self.kill = _spec("FAULT_KILL")
        self.fail = _spec("FAULT_FAIL_RANK")
        self.sleep = float(os.environ.get("FAULT_SLEEP", "0") or 0)

    def _kill_at(self, kind: str, step: int, epoch_end: bool = False) -> None:
        if self.kill[:2] == [kind, str(step)]:
            _die(f"{kind} at step {step}{' (epoch end)' if epoch_end else ''}")

    def on_train_begin(self, ctx) -> None:
        _RUN["ctx"] = ctx

    def on_batch_end(self, ctx, output) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        accum = ctx.cfg.grad_accum_steps
        if accum > 1 and (ctx.epoch_consumed // ctx.cfg.batch_size) % accum == 1:
            self._kill_at("batch_end", ctx.global_step + 1)

    def on_step_end(self, ctx) -> None:
        self._kill_at("step_end", ctx.global_step)
        if self.fail[1:2] == [str(ctx.global_step)]:
            fail_on_rank(ctx, f"at step {ctx.global_step}")

    def state_dict(self) -> dict[str, Any]:
        # Called by the checkpoint writer after the model, optimizer and scheduler files are in
        # the temporary folder and before trainer_state.json, the manifest and the rename.
        ctx = _RUN["ctx"]
        if ctx is not None:
            if ctx.epoch_ended:
                self._kill_at("ckpt_write_epoch", ctx.global_step, epoch_end=True)
            else:
                self._kill_at("ckpt_write", ctx.global_step)
        return {"injector": 1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert state == {"injector": 1}, state


def fail_on_rank(ctx, where: str) -> None:
    """Raise on the rank FAULT_FAIL_RANK names (a DataError with `:data`, else RuntimeError)."""
    spec = _spec("FAULT_FAIL_RANK")
    if not spec or ctx.rank != int(spec[0]):
        return
    message = f"injected failure on rank {ctx.rank} {where}"
    if spec[-1] == "data":  # an error the CLI reports as a one-line user error
        from kronos_engine.errors import DataError

        raise DataError(message)
    raise RuntimeError(message)


class _NanGrad(torch.autograd.Function):
    """Identity forward; a NaN gradient backward (the loss itself stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class _FaultyMixin:
    """Non-finite losses/gradients/metrics and kills inside validation, for either strategy."""

    def setup(self, ctx):
        super().setup(ctx)
        if _spec("FAULT_FAIL_RANK")[1:2] == ["setup"]:
            fail_on_rank(ctx, "in setup")

    def training_step(self, model, batch, ctx):
        out = super().training_step(model, batch, ctx)
        nan = _spec("FAULT_NAN")
        if nan and int(nan[1]) == ctx.global_step + 1:
            if nan[0] == "loss":
                bad = float("inf") if nan[2:] == ["inf"] else float("nan")
                out.loss = out.loss * bad
            elif nan[0] == "grad":
                out.loss = _NanGrad.apply(out.loss)
        return out

    def validation_step(self, model, batch, ctx):
        if _spec("FAULT_FAIL_RANK")[1:3] == ["val", str(ctx.global_step)]:
            fail_on_rank(ctx, f"in validation at step {ctx.global_step}")
        kill = _spec("FAULT_KILL")
        if kill and kill[0] == "val" and int(kill[1]) == ctx.global_step:
            count = ctx.extra.get("faultinject_val_batches", 0) + 1
            ctx.extra["faultinject_val_batches"] = count
            if count == int(kill[2]):
                _die(f"in validation batch {count} at step {ctx.global_step}")
        out = super().validation_step(model, batch, ctx)
        nan = _spec("FAULT_NAN")
        if nan and nan[0] == "val" and int(nan[1]) == ctx.global_step:
            out.metric_sum = out.metric_sum * float("nan")
        return out


class FaultyTokenizer(_FaultyMixin, TokenizerReconStrategy):
    pass


class FaultyPredictor(_FaultyMixin, PredictorNextTokenStrategy):
    pass


# ---------------------------------------------------------------- low-level checkpoint kills


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _install_checkpoint_kills(step: int, op: str) -> None:
    """Wrap the functions `save_checkpoint` calls, to die at exactly one point of step `step`.

    Each is replaced where its caller looks it up: `resume` (which imported `save_resumable_model`
    and `write_json` by name) for the checkpoint's files, `checkpoint_store` for the manifest and
    pruning, and the `os`/`torch` modules for the renames and `torch.save`."""
    if op not in CKPT_OPS:
        raise ValueError(f"FAULT_KILL ckpt_op: unknown operation {op!r}; one of {CKPT_OPS}")
    rs, st = resume_module, store_module
    save_model, write_json = rs.save_resumable_model, rs.write_json
    write_manifest, prune = st.write_manifest, st.prune_checkpoints
    replace, torch_save = os.replace, torch.save
    tmp_name = f".tmp_step_{step}"

    def here(path) -> bool:
        return _step() == step and Path(path).name in (tmp_name, f"step_{step}")

    def save_model_(model, directory):
        save_model(model, directory)
        if op == "model_torn" and here(directory):
            _tear(Path(directory) / "model.safetensors")
            _die(f"after tearing model.safetensors of step {step}")

    def torch_save_(obj, f, *args, **kwargs):
        torch_save(obj, f, *args, **kwargs)
        if op == "optimizer_torn" and isinstance(f, (str, Path)) and here(Path(f).parent):
            _tear(Path(f))
            _die(f"after tearing optimizer.pt of step {step}")

    def write_json_(path, obj):
        write_json(path, obj)
        path = Path(path)
        if op == "state_written" and path.name == "trainer_state.json" and here(path.parent):
            _die(f"after trainer_state.json of step {step}")

    def write_manifest_(directory):
        write_manifest(directory)
        if op == "manifest_torn" and here(directory):
            _tear(Path(directory) / "manifest.json")
            _die(f"after tearing manifest.json of step {step}")

    def replace_(src, dst, *args, **kwargs):
        if op == "before_rename" and Path(src).name == tmp_name and _step() == step:
            _die(f"before renaming the folder of step {step}")
        replace(src, dst, *args, **kwargs)
        if op == "between_renames" and Path(dst).name == f".old_step_{step}":
            _die(f"between the two renames of the re-save of step {step}")

    def prune_(root, keep_last):
        if op == "mid_prune" and _step() == step:
            doomed = st.list_checkpoints(Path(root))[:-keep_last]
            if doomed:
                files = sorted(doomed[0].iterdir())
                for path in files[: len(files) // 2]:
                    path.unlink()
                _die(f"while pruning {doomed[0].name} after step {step}")
        prune(root, keep_last)

    rs.save_resumable_model, rs.write_json = save_model_, write_json_
    st.write_manifest, st.prune_checkpoints = write_manifest_, prune_
    os.replace = replace_
    torch.save = torch_save_


_KILL = _spec("FAULT_KILL")
if _KILL[:1] == ["ckpt_op"]:
    _install_checkpoint_kills(int(_KILL[1]), _KILL[2])


# ================================================================ harness (test process only)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TRAIN = REPO / "scripts" / "train.py"
TIMING_FIELDS = ("samples_per_s", "wall_time_s")
PATH_FIELDS = ("best_dir",)

# 12 optimizer steps (6 per epoch) of 2 micro-batches, validation every 3 steps, a checkpoint
# every step, dropout on and 2 DataLoader workers: every source of state a resume must restore.
TINY = [
    "--model_preset=tiny",
    "--demo_symbols=2",
    "--demo_length=200",
    "--lookback_window=20",
    "--predict_window=4",
    "--batch_size=4",
    "--grad_accum_steps=2",
    "--train_samples_per_epoch=48",
    "--val_samples=16",
    "--epochs=2",
    "--ckpt_interval=1",
    "--val_interval=3",
    "--dropout=0.1",
    "--num_workers=2",
    "--log_interval=1",
    "--progress_bar=false",
    "--seed=3",
    "--device=cpu",
    "--callbacks=faultinject:Faults",
]
LAST_STEP = 12


@dataclass
class Result:
    """A finished CLI process: return code, output text and how long it ran."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __repr__(self) -> str:
        return f"rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-4000:]}"


def env(**faults: str) -> dict[str, str]:
    """The subprocess environment: this one, tests/ importable, no inherited FAULT_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
    path = os.pathsep.join(filter(None, [str(TESTS), base.get("PYTHONPATH")]))
    return {**base, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **faults}


def train_args(train_type: str, out: Path, tokenizer: Path | None = None) -> list[str]:
    strategy = "FaultyTokenizer" if train_type == "tokenizer" else "FaultyPredictor"
    args = [f"--train_type={train_type}", *TINY, f"--strategy=faultinject:{strategy}"]
    args += [f"--output_dir={out}", f"--exp_dir={out.parent}"]
    if tokenizer is not None:
        args.append(f"--tokenizer_path={tokenizer}")
    return args


def start(
    args: list[str],
    workdir: Path,
    cmd: list[str] | None = None,
    new_session: bool = False,
    file_size_limit: int | None = None,
    **faults: str,
):
    """Popen the CLI with output going to files (DataLoader workers of a killed process may
    outlive it for a moment; pipes would make the caller wait for them). `new_session` gives
    it a process group of its own, to signal the group as a shell's Ctrl-C does;
    `file_size_limit` (bytes, RLIMIT_FSIZE) makes bigger writes fail with EFBIG."""

    def limit_file_size() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("*.stderr")))
    out, err = workdir / f"{n:02d}.stdout", workdir / f"{n:02d}.stderr"
    cmd = cmd or [sys.executable, str(TRAIN)]
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [*cmd, *map(str, args)],
            cwd=REPO,
            env=env(**faults),
            stdout=fo,
            stderr=fe,
            start_new_session=new_session,
            preexec_fn=limit_file_size if file_size_limit else None,
        )
    proc.log_files = (out, err)  # type: ignore[attr-defined]
    proc.t0 = time.monotonic()  # type: ignore[attr-defined]
    return proc


def finish(proc, timeout: float = 300) -> Result:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    seconds = time.monotonic() - proc.t0
    out, err = proc.log_files
    return Result(rc, out.read_text(), err.read_text(), seconds)


def run(
    args: list[str], workdir: Path, timeout: float = 300, cmd: list[str] | None = None, **faults
) -> Result:
    return finish(start(args, workdir, cmd=cmd, **faults), timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics(out: Path) -> list[dict]:
    """metrics.jsonl without wall-clock fields."""
    records = read_jsonl(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def summary(out: Path) -> dict:
    data = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMING_FIELDS + PATH_FIELDS}


def steps(out: Path) -> list[int]:
    return [int(p.name[5:]) for p in store_module.list_checkpoints(out / "checkpoints")]


def checkpoint_bytes(out: Path, step: int) -> dict[str, bytes]:
    """The files of a checkpoint that must be bit-identical between runs."""
    folder = out / "checkpoints" / f"step_{step}"
    return {
        name: (folder / name).read_bytes()
        for name in ("model.safetensors", "optimizer.pt", "scheduler.json")
    }


def trainer_state(out: Path, step: int) -> dict:
    return store_module.read_trainer_state(out / "checkpoints" / f"step_{step}")


def make_tokenizer(path: Path) -> Path:
    """A tiny random tokenizer directory for predictor runs."""
    from kronos_engine.models import build_tokenizer

    if not (path / "model.safetensors").is_file():
        torch.manual_seed(0)
        build_tokenizer("tiny").save_pretrained(path)
    return path


def torchrun(nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone"] + [
        f"--nproc_per_node={nproc}",
        str(TRAIN),
    ]


_REFERENCES: dict[tuple[str, str, int], Path] = {}


def reference_run(tmp_path_factory, train_type: str, nproc: int = 1) -> tuple[Path, Path | None]:
    """One uninterrupted run per train type (and process count) and pytest session, shared by
    the fault tests."""
    key = (str(tmp_path_factory.getbasetemp()), train_type, nproc)
    root = tmp_path_factory.getbasetemp() / "faults_shared"
    tokenizer = make_tokenizer(root / "tok") if train_type == "predictor" else None
    if key not in _REFERENCES:
        out = root / f"reference_{train_type}_{nproc}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = torchrun(nproc) if nproc > 1 else None
        result = run(train_args(train_type, out, tokenizer), root / "logs", cmd=cmd)
        assert result.returncode == 0, result
        _REFERENCES[key] = out
    return _REFERENCES[key], tokenizer


def wait_for_records(proc, out: Path, count: int, timeout: float = 120) -> None:
    """Block until metrics.jsonl holds `count` lines (the run is well under way)."""
    path, deadline = out / "metrics.jsonl", time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= count):
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "no metrics in time"
        time.sleep(0.05)


def assert_same_run(out: Path, reference: Path) -> None:
    """`out` ended exactly as the uninterrupted `reference`: bit-identical final checkpoint and
    best model, identical metrics (train and validation records) and summary."""
    last = steps(reference)[-1]
    assert steps(out)[-1] == last, steps(out)
    final, ref = checkpoint_bytes(out, last), checkpoint_bytes(reference, last)
    for name in final:
        assert final[name] == ref[name], f"{name} of the final checkpoint differs"
    state, ref_state = trainer_state(out, last), trainer_state(reference, last)
    assert state["counters"] == ref_state["counters"]
    assert state["rng"] == ref_state["rng"]
    best = (out / "best" / "model.safetensors").read_bytes()
    assert best == (reference / "best" / "model.safetensors").read_bytes(), "best/ differs"
    assert metrics(out) == metrics(reference)
    assert summary(out) == summary(reference)
