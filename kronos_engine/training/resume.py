"""The resume policy: what of a training context goes into a checkpoint, and how a context is
restored from one. The files' format (folder, manifest, discovery, pruning) is
`kronos_engine.run.checkpoints`; the model files are `kronos_engine.models.io`'s.

`save_checkpoint(ctx, root, keep_last)` writes the model (LoRA: the adapter alone), the
optimizer, the scheduler, counters, callback states, every rank's RNG and the config.
`load_checkpoint(ctx, directory)` restores them: the optimizer through `weights_only=True`,
the schedule re-entered at the saved step under the current config (a changed schedule is
warned about), the epoch position rescaled to the world size, and this rank's RNG last.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kronos_engine.config.loading import write_config
from kronos_engine.config.schema import TrainConfig, coerce, field_type
from kronos_engine.errors import ResumeError, UserError
from kronos_engine.layout import RunLayout
from kronos_engine.models.adapters import ADAPTER_WEIGHTS, is_adapted
from kronos_engine.models.io import WEIGHTS_NAME, load_model_weights, save_resumable_model
from kronos_engine.rng import capture_rng_state, restore_rng_state
from kronos_engine.run import checkpoints as checkpoint_store
from kronos_engine.run.checkpoints import FORMAT_VERSION, TRAINER_STATE, write_json
from kronos_engine.run.finished import read_run_config
from kronos_engine.training.finetune import freeze_patterns, lora_targets

if TYPE_CHECKING:
    from kronos_engine.context import TrainContext


log = logging.getLogger("kronos_engine")

OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"


def save_checkpoint(ctx: TrainContext, root: Path, keep_last: int) -> Path:
    """Write `root/step_<global_step>` atomically (rank 0) with every rank's RNG state."""
    executor = ctx.executor
    rng_states = executor.all_gather_object(capture_rng_state())
    final = checkpoint_store.step_dir(root, ctx.global_step)
    if executor.is_main:
        checkpoint_store.write_checkpoint(
            root,
            ctx.global_step,
            lambda directory: _write_checkpoint_files(ctx, directory, rng_states),
            keep_last,
        )
    executor.barrier()
    return final


def _write_checkpoint_files(ctx: TrainContext, directory: Path, rng_states: list) -> None:
    # LoRA: the adapter only, the frozen base is rebuilt on resume.
    save_resumable_model(ctx.unwrapped_model, directory)
    torch.save(ctx.optimizer.state_dict(), directory / OPTIMIZER_FILE)
    if ctx.scheduler is not None:
        write_json(directory / SCHEDULER_FILE, ctx.scheduler.state_dict())
    state = {
        "format_version": FORMAT_VERSION,
        "train_type": ctx.cfg.train_type,
        "world_size": ctx.world_size,
        "counters": ctx.counters(),
        "callbacks": ctx.callbacks.state_dict(),
        "rng": rng_states,
        "torch_version": torch.__version__,
    }
    write_json(directory / TRAINER_STATE, state)
    ctx.callbacks.save_files(ctx, directory)
    write_config(RunLayout(directory).config, ctx.cfg)


def load_checkpoint(ctx: TrainContext, directory: Path) -> None:
    """Restore model, optimizer, scheduler, counters, callback states and this rank's RNG."""
    state = checkpoint_store.read_trainer_state(directory)
    if state.get("train_type") != ctx.cfg.train_type:
        raise ResumeError(
            f"{directory}: checkpoint is for train_type '{state.get('train_type')}', "
            f"this run is '{ctx.cfg.train_type}'"
        )
    try:
        load_model_weights(ctx.unwrapped_model, directory)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        adapted = is_adapted(ctx.unwrapped_model)
        if adapted:
            _check_adapter_config(ctx.cfg, directory)  # names the key that differs, if one does
        weights = ADAPTER_WEIGHTS if adapted else WEIGHTS_NAME
        raise ResumeError(f"{directory}/{weights}: does not fit the model ({first})") from None
    opt_state = _load_optimizer_state(directory / OPTIMIZER_FILE, ctx.executor.device)
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
    try:
        ctx.optimizer.load_state_dict(opt_state)
    except ValueError as exc:  # another trainable set (a checkpoint without its config.yaml)
        saved = sum(len(g.get("params", [])) for g in opt_state["param_groups"])
        now = sum(len(g["params"]) for g in ctx.optimizer.param_groups)
        raise ResumeError(
            f"{directory}/{OPTIMIZER_FILE}: holds the state of {saved} trainable parameter "
            f"tensors, this run trains {now} ({' '.join(str(exc).split())}); resume with the "
            "finetune_method, freeze_patterns and lora_* keys the checkpoint was written with"
        ) from None
    for group, hyper in zip(ctx.optimizer.param_groups, fresh):
        group.update(hyper)
    if ctx.scheduler is None:
        return
    saved = json.loads((directory / SCHEDULER_FILE).read_text(encoding="utf-8"))
    # Re-enter the closed-form schedule at the saved step: step() sets every group's lr (and
    # OneCycle's momentum) for `last_epoch`, as the uninterrupted run's step() did.
    ctx.scheduler.last_epoch = int(saved["last_epoch"]) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ctx.scheduler.step()
        except ValueError:  # OneCycleLR cannot step past its total: say what to change
            step = int(saved["last_epoch"])
            raise ResumeError(
                f"{directory}: the checkpoint is at step {step}, past the end of this config's "
                f"{ctx.cfg.scheduler} schedule (step {ctx.total_steps}, from epochs and "
                f"max_steps); resume with max_steps >= {step} (or more epochs)"
            ) from None
    ctx.scheduler._step_count = int(saved.get("_step_count", ctx.scheduler._step_count))
    _warn_on_schedule_change(ctx, directory)


def _warn_on_schedule_change(ctx: TrainContext, directory: Path) -> None:
    saved = read_run_config(directory)  # {} for a checkpoint written without one
    changed = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != getattr(ctx.cfg, k)]
    if changed and ctx.is_main:
        log.warning(
            "resuming with changed %s (checkpoint %s): training continues on the new schedule "
            "from step %s, so it is not identical to an uninterrupted run of either config",
            ", ".join(changed),
            directory,
            ctx.scheduler.last_epoch if ctx.scheduler is not None else "?",
        )


# ---------------------------------------------------------------- does the checkpoint fit?


def check_resume_fits(cfg: TrainConfig, directory: Path) -> None:
    """Before any work: the checkpoint was written by a run that trains what this one trains.
    Its optimizer state and model files hold exactly that run's trainable parameters, so a
    changed `finetune_method`, `freeze_patterns` or LoRA shape (`lora_r`, `lora_alpha`,
    `lora_targets`) cannot be resumed: one line names the key and both values."""
    saved = _saved_config(directory)
    old_type = saved.get("train_type", cfg.train_type)
    if old_type != cfg.train_type:
        raise ResumeError(
            f"{directory}: checkpoint is for train_type '{old_type}', this run is "
            f"'{cfg.train_type}'"
        )
    for key, old, new in _trainable_setup(saved, cfg):
        if old != new:
            raise ResumeError(
                f"{key}: the checkpoint {directory} was trained with {_shown(old)}, this run "
                f"asks for {_shown(new)}; a resumed run must train the same parameters (the "
                f"checkpoint's optimizer state and model files hold exactly those): resume with "
                f"{_flag(key, old)}, or start a new run without --resume"
            )


def _saved_config(directory: Path) -> dict:
    """The checkpoint's config.yaml as typed values ({} without one: then the files decide)."""
    try:
        raw = read_run_config(directory)
    except UserError as exc:
        raise ResumeError(f"resume: {exc}") from None
    values = {}
    for key, value in raw.items():
        try:
            values[key] = coerce(key, value, field_type(key))
        except (KeyError, UserError):  # a key this version dropped, or junk: not compared
            continue
    return values


def _trainable_setup(saved: dict, cfg: TrainConfig) -> list[tuple[str, object, object]]:
    """(key, checkpoint's value, this run's value) of what decides the trainable set; lists
    compare as sets (order does not matter to peft or to the freeze)."""
    if not saved:
        return []
    old = TrainConfig(**{**saved, "train_type": cfg.train_type})
    rows: list[tuple[str, object, object]] = [
        ("finetune_method", old.finetune_method, cfg.finetune_method)
    ]
    if old.finetune_method != cfg.finetune_method:
        return rows
    if cfg.finetune_method == "freeze":
        rows.append(
            ("freeze_patterns", _as_set(freeze_patterns(old)), _as_set(freeze_patterns(cfg)))
        )
    if cfg.finetune_method == "lora":
        rows.append(("lora_r", old.lora_r, cfg.lora_r))
        rows.append(("lora_alpha", float(old.lora_alpha), float(cfg.lora_alpha)))
        rows.append(("lora_targets", _as_set(lora_targets(old)), _as_set(lora_targets(cfg))))
    return rows


def _as_set(names: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names)))


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


def _flag(key: str, value: object) -> str:
    """The flag that sets `key` back to the checkpoint's `value`."""
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"--{key}={text}"


def _check_adapter_config(cfg: TrainConfig, directory: Path) -> None:
    """For a checkpoint without config.yaml: peft's adapter_config.json says the adapter's
    rank, scaling and targets; a difference is named (key, checkpoint's value, this run's)."""
    try:
        adapter = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    rows = [
        ("lora_r", adapter.get("r"), cfg.lora_r),
        ("lora_alpha", adapter.get("lora_alpha"), cfg.lora_alpha),
        ("lora_targets", _as_set(adapter.get("target_modules") or []), _as_set(lora_targets(cfg))),
    ]
    for key, old, new in rows:
        if old is not None and old != new and old != ():
            raise ResumeError(
                f"{key}: the checkpoint {directory} holds an adapter with {_shown(old)}, this "
                f"run asks for {_shown(new)}; resume with {_flag(key, old)}"
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
