"""Resumable checkpoints: atomic writes, integrity manifest, retention, and safe loading.

Layout of `<output_dir>/checkpoints/step_<N>/`:
  config.json + model.safetensors  the model in the public layout (loadable by the public code);
                                   with LoRA instead adapter_config.json + adapter_model.safetensors
  optimizer.pt                     optimizer state, read back with `torch.load(weights_only=True)`
  scheduler.json                   LR scheduler state
  trainer_state.json               counters, sampler position, callback states, per-rank RNG
  config.yaml                      the resolved run config
  manifest.json                    size + sha256 of every file above; written last
A checkpoint folder is only ever created by renaming a finished temporary folder, and a folder
whose manifest does not match its files is reported and skipped by `find_resume_checkpoint`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from kronos_engine.finetune import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    is_adapted,
    load_adapter,
    merged_copy,
    save_adapter,
    save_adapter_checkpoint,
)
from kronos_engine.rng import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from kronos_engine.context import TrainContext

log = logging.getLogger("kronos_engine")

STEP_DIR = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ResumeError(RuntimeError):
    """A checkpoint cannot be used for resuming; the message names the folder and the problem."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, read-only); the earlier ones are
    intact. The message names the folder and the underlying error in one line."""


try:  # safetensors reports I/O errors (ENOSPC, EFBIG) as its own type, not OSError
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # pragma: no cover - older safetensors
    _SafetensorError = RuntimeError

_WRITE_ERRORS = (OSError, RuntimeError, _SafetensorError)  # torch.save raises RuntimeError


@contextlib.contextmanager
def writing(target: Path, tmp: Path):
    """Turn a failed write into `tmp` into a `CheckpointWriteError` naming `target`, and remove
    the partial `tmp` (giving its space back). `target` itself is only ever replaced by an
    atomic rename after this block."""
    try:
        yield
    except _WRITE_ERRORS as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointWriteError(
            f"{target}: not written, earlier checkpoints are untouched "
            f"({type(exc).__name__}: {reason})"
        ) from exc


def replace_dir(tmp: Path, final: Path, old: Path) -> None:
    """Put the finished folder `tmp` at `final` by renames only; an existing `final` (a re-save)
    is first moved aside to `old`, so a reader never sees a partly written `final`."""
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ---------------------------------------------------------------- model files


def save_model(model: nn.Module, directory: Path) -> None:
    """Public layout when the model supports it, else a plain safetensors state dict. A LoRA
    model is saved merged (a plain model in the public layout) plus its adapter in
    `adapter/` (peft's layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    if is_adapted(model):
        save_model(merged_copy(model), directory)
        save_adapter(model, directory / ADAPTER_DIR)
    elif hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))


def load_model_weights(model: nn.Module, directory: Path) -> None:
    if is_adapted(model):
        load_adapter(model, directory)
        return
    if (directory / ADAPTER_WEIGHTS).is_file():
        raise RuntimeError(
            "the checkpoint holds LoRA adapters: resume it with finetune_method=lora"
        )
    state = load_file(str(directory / "model.safetensors"))
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------- integrity


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def write_manifest(directory: Path) -> None:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    entries = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    _write_json(directory / MANIFEST, {"format_version": FORMAT_VERSION, "files": entries})


def verify_checkpoint(directory: Path) -> None:
    """Raise `ResumeError` unless every file listed in the manifest is present and intact."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ResumeError(f"{directory}: no {MANIFEST} (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ResumeError(f"{manifest_path}: unreadable manifest ({exc})") from None
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise ResumeError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != meta["size"]:
            raise ResumeError(
                f"{path}: size {path.stat().st_size} != {meta['size']} in manifest (truncated?)"
            )
        if _sha256(path) != meta["sha256"]:
            raise ResumeError(f"{path}: checksum does not match the manifest (corrupted)")


# ---------------------------------------------------------------- discovery


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root`, oldest step first (temporary folders excluded)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest intact one under an output dir (falling back)."""
    path = Path(path)
    if not path.exists():
        raise ResumeError(f"resume: '{path}' does not exist")
    if (path / MANIFEST).exists() or STEP_DIR.match(path.name):
        verify_checkpoint(path)
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = list_checkpoints(root)
    if not candidates:
        raise ResumeError(f"resume: no checkpoint folder (step_<N>) under '{root}'")
    for candidate in reversed(candidates):
        try:
            verify_checkpoint(candidate)
            return candidate
        except ResumeError as exc:
            log.warning("skipping damaged checkpoint: %s; trying the previous one", exc)
    raise ResumeError(f"resume: every checkpoint under '{root}' is damaged")


# ---------------------------------------------------------------- save / load


def save_checkpoint(ctx: TrainContext, root: Path, keep_last: int) -> Path:
    """Write `root/step_<global_step>` atomically (rank 0) with every rank's RNG state."""
    executor = ctx.executor
    rng_states = executor.all_gather_object(capture_rng_state())
    final = root / f"step_{ctx.global_step}"
    if executor.is_main:
        tmp = root / f".tmp_step_{ctx.global_step}"
        with writing(final, tmp):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            _write_checkpoint_files(ctx, tmp, rng_states)
            write_manifest(tmp)
        replace_dir(tmp, final, root / f".old_step_{ctx.global_step}")
        _fsync_dir(root)
        prune_checkpoints(root, keep_last)
    executor.barrier()
    return final


def _write_checkpoint_files(ctx: TrainContext, directory: Path, rng_states: list) -> None:
    if is_adapted(ctx.unwrapped_model):  # the adapter only: the frozen base is rebuilt on resume
        save_adapter_checkpoint(ctx.unwrapped_model, directory)
    else:
        save_model(ctx.unwrapped_model, directory)
    torch.save(ctx.optimizer.state_dict(), directory / "optimizer.pt")
    if ctx.scheduler is not None:
        _write_json(directory / "scheduler.json", ctx.scheduler.state_dict())
    state = {
        "format_version": FORMAT_VERSION,
        "train_type": ctx.cfg.train_type,
        "world_size": ctx.world_size,
        "counters": ctx.counters(),
        "callbacks": ctx.callbacks.state_dict(),
        "rng": rng_states,
        "torch_version": torch.__version__,
    }
    _write_json(directory / "trainer_state.json", state)
    ctx.callbacks.save_files(ctx, directory)
    with open(directory / "config.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(ctx.cfg.to_dict(), fh, sort_keys=False)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))


def load_checkpoint(ctx: TrainContext, directory: Path) -> None:
    """Restore model, optimizer, scheduler, counters, callback states and this rank's RNG."""
    state = read_trainer_state(directory)
    if state.get("train_type") != ctx.cfg.train_type:
        raise ResumeError(
            f"{directory}: checkpoint is for train_type '{state.get('train_type')}', "
            f"this run is '{ctx.cfg.train_type}'"
        )
    try:
        load_model_weights(ctx.unwrapped_model, directory)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        weights = ADAPTER_WEIGHTS if is_adapted(ctx.unwrapped_model) else "model.safetensors"
        raise ResumeError(f"{directory}/{weights}: does not fit the model ({first})") from None
    opt_state = _load_optimizer_state(directory / "optimizer.pt", ctx.executor.device)
    _restore_optimizer_and_schedule(ctx, opt_state, directory)
    counters = dict(state["counters"])
    saved_world = int(state.get("world_size", 1))
    counters["epoch_consumed"] = _rescale_consumed(
        counters["epoch_consumed"], saved_world, ctx.world_size, directory
    )
    ctx.load_counters(counters)
    ctx.callbacks.load_state_dict(state.get("callbacks", {}))
    ctx.callbacks.load_files(ctx, directory)
    rng = state.get("rng", [])
    if saved_world == ctx.world_size and ctx.rank < len(rng):
        restore_rng_state(rng[ctx.rank])
    else:
        log.warning(
            "%s was written by %d process(es), resuming with %d: RNG streams are re-seeded, "
            "so later losses are not bit-identical to an uninterrupted run",
            directory,
            saved_world,
            ctx.world_size,
        )


SCHEDULE_KEYS = (
    "lr",
    "scheduler",
    "warmup_ratio",
    "div_factor",
    "epochs",
    "max_steps",
    "train_samples_per_epoch",
    "batch_size",
    "grad_accum_steps",
    "adam_beta1",
    "adam_beta2",
    "weight_decay",
    "sgdr_cycle_steps",
    "sgdr_cycle_mult",
    "wsd_decay_ratio",
)


def _restore_optimizer_and_schedule(ctx: TrainContext, opt_state: dict, directory: Path) -> None:
    """The checkpoint gives the optimizer's moments and the step reached; the current config
    gives the hyper-parameters and the schedule's shape. With an unchanged config this is
    exactly the saved state; with, say, a larger `max_steps` the run continues on the new
    schedule from the step it reached (the old one would end or fail at its old total)."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in ctx.optimizer.param_groups]
    ctx.optimizer.load_state_dict(opt_state)
    for group, hyper in zip(ctx.optimizer.param_groups, fresh):
        group.update(hyper)
    if ctx.scheduler is None:
        return
    saved = json.loads((directory / "scheduler.json").read_text(encoding="utf-8"))
    # Re-enter the closed-form schedule at the saved step: step() sets every group's lr (and
    # OneCycle's momentum) for `last_epoch`, as the uninterrupted run's step() did.
    ctx.scheduler.last_epoch = int(saved["last_epoch"]) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx.scheduler.step()
    ctx.scheduler._step_count = int(saved.get("_step_count", ctx.scheduler._step_count))
    _warn_on_schedule_change(ctx, directory)


def _warn_on_schedule_change(ctx: TrainContext, directory: Path) -> None:
    config_file = directory / "config.yaml"
    if not config_file.exists():
        return
    saved = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    changed = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != getattr(ctx.cfg, k)]
    if changed and ctx.is_main:
        log.warning(
            "resuming with changed %s (checkpoint %s): training continues on the new schedule "
            "from step %s, so it is not identical to an uninterrupted run of either config",
            ", ".join(changed),
            directory,
            ctx.scheduler.last_epoch if ctx.scheduler is not None else "?",
        )


def _load_optimizer_state(path: Path, device) -> dict:
    """Tensors, numbers and containers only: `weights_only` refuses any other pickled object
    (a crafted file cannot run code); the refusal is a one-line `ResumeError`."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign objects, others for junk
        # torch's message wraps the reason in advice to retry with weights_only=False: drop it.
        boilerplate = ("Weights only load failed", "Check the documentation")
        parts = [p for p in str(exc).split("\n\n") if p.strip() and not p.startswith(boilerplate)]
        reason = " ".join(" ".join(parts).split()) or type(exc).__name__
        raise ResumeError(
            f"{path}: not a plain optimizer state, refused to load it "
            f"({type(exc).__name__}: {reason[:300]})"
        ) from None
    if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
        raise ResumeError(f"{path}: not an optimizer state dict (no 'state'/'param_groups')")
    return state


def _rescale_consumed(consumed: int, saved_world: int, world: int, directory: Path) -> int:
    total = consumed * saved_world
    if total % world:
        raise ResumeError(
            f"{directory}: {total} samples consumed this epoch cannot be split over {world} "
            f"processes; resume with {saved_world} process(es)"
        )
    return total // world
