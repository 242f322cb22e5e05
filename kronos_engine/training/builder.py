"""`TrainContextBuilder`: a `TrainConfig` in, a ready-to-run `TrainContext` out.

Order matters for exact resume: everything that consumes randomness (model init, samplers,
loaders) is built first, and a checkpoint's RNG states are restored last.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from kronos_engine.callback import CallbackList, TrainCallback
from kronos_engine.config import TrainConfig
from kronos_engine.config.loading import write_config
from kronos_engine.config.rules import long_window_note
from kronos_engine.context import TrainContext
from kronos_engine.data.frequency import is_auto
from kronos_engine.data.sources import AUTO as AUTO_SOURCE
from kronos_engine.data.sources import settle_data_source
from kronos_engine.data.spec import DataSpec
from kronos_engine.layout import RunLayout
from kronos_engine.registry import CALLBACKS, STRATEGIES
from kronos_engine.rng import seed_everything
from kronos_engine.run import outputs as run_dir
from kronos_engine.run.checkpoints import MANIFEST, find_resume_checkpoint, list_checkpoints
from kronos_engine.run.outputs import clear_previous_run
from kronos_engine.strategy import Strategy, check_strategy_train_type
from kronos_engine.training.executors import Executor, make_executor
from kronos_engine.training.finetune import apply_finetune_method
from kronos_engine.training.model_factory import BUILT_IN_STRATEGIES
from kronos_engine.training.optim import build_optimizer, build_scheduler
from kronos_engine.training.preflight import check
from kronos_engine.training.resume import check_resume_fits, load_checkpoint
from kronos_engine.training.trainer import EpochPlan
from kronos_engine.training.validation import check_metric_defined

log = logging.getLogger("kronos_engine")

DEFAULT_STRATEGY = BUILT_IN_STRATEGIES  # by train_type


class TrainContextBuilder:
    """Assemble executor, data, strategy, model, optimizer, scheduler and callbacks.

    >>> ctx = TrainContextBuilder(cfg).with_callbacks(MyCallback()).build()
    >>> Trainer(ctx).fit()
    >>> ctx.executor.close()  # under torchrun: destroys the process group the build created

    `executor`: run on this one (e.g. one process group for several runs) instead of making
    one in `build`. Either way `self.executor` is the run's executor as soon as it exists, also
    when `build` fails later, so the caller can `close` it.
    """

    def __init__(self, cfg: TrainConfig, executor: Executor | None = None) -> None:
        self.cfg = cfg
        self.executor = executor
        self._user_callbacks: list[TrainCallback | str] = list(cfg.callbacks)
        self._splits: Any = None

    # ---- overrides (user code and tests) ----
    def with_callbacks(self, *callbacks: TrainCallback | str) -> TrainContextBuilder:
        self._user_callbacks.extend(callbacks)
        return self

    def with_data(self, splits: Any) -> TrainContextBuilder:
        """Use already-built splits (an object with `.train` and `.val` datasets)."""
        self._splits = splits
        return self

    # ---- assembly ----
    def build(self) -> TrainContext:
        """Assemble the run after `kronos_engine.config.check` (the same checks as the command
        line). Rank 0 holds `output_dir` (see `run_dir`) from here until `Trainer.fit` ends; a
        build that fails gives it back."""
        cfg = self.cfg
        checkpoint = check(cfg, callbacks=self._user_callbacks)  # verified; fits this run
        taken = run_dir.hold(cfg)
        try:
            if checkpoint is not None and not _still_newest(cfg.resume, checkpoint):
                # A run that held the folder until now wrote a newer one: resume from that.
                checkpoint = find_resume_checkpoint(cfg.resume)
                check_resume_fits(cfg, checkpoint)
            return self._build(checkpoint)
        except BaseException:
            if taken:
                run_dir.release(cfg.resolved_output_dir)
            raise

    def _build(self, checkpoint: Path | None) -> TrainContext:
        cfg = self.cfg
        if self.executor is None:
            self.executor = make_executor(cfg.device, cfg.precision)
        executor = self.executor
        cfg = self._settle_source(cfg, executor.is_main)
        _configure_determinism(cfg)
        seed_everything(cfg.seed)
        callbacks = CallbackList(self.default_callbacks() + self._resolve_user_callbacks())
        splits = self._splits if self._splits is not None else self._load_data(executor)
        if is_auto(cfg.freq) and splits.summary.get("freq"):
            # freq: auto -> the bar length the data has, as the run's config.yaml records it
            cfg = self.cfg = dataclasses.replace(cfg, freq=splits.summary["freq"])
        check_metric_defined(cfg, splits)  # needs the data; before the model and any write
        strategy = self._make_strategy()
        model = apply_finetune_method(strategy.build_model(), cfg)  # before per-rank seeds
        if cfg.compile:
            model.compile()  # in place: state-dict keys stay clean (no `_orig_mod.`)
        seed_everything(cfg.seed + executor.rank)  # distinct dropout streams per rank
        model = executor.prepare(model)
        train_loader, train_sampler, val_loader = self._make_loaders(splits, executor)
        plan = EpochPlan(train_sampler.num_samples_per_rank, cfg.batch_size, cfg.grad_accum_steps)
        total_steps = cfg.epochs * plan.num_steps
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        optimizer = build_optimizer(cfg, model)
        ctx = TrainContext(
            cfg=cfg,
            model=model,
            strategy=strategy,
            optimizer=optimizer,
            scheduler=build_scheduler(cfg, optimizer, total_steps),
            executor=executor,
            callbacks=callbacks,
            train_loader=train_loader,
            train_sampler=train_sampler,
            val_loader=val_loader,
            output_dir=cfg.resolved_output_dir,
            steps_per_epoch=plan.num_steps,
            total_steps=total_steps,
        )
        strategy.setup(ctx)
        if checkpoint is not None:
            # Before the output dir is written: a checkpoint that does not fit this run
            # (train_type, shapes, optimizer file) fails with the run's files untouched.
            load_checkpoint(ctx, checkpoint)  # restores RNG last
            if executor.is_main:
                log.info("resumed from %s at step %d", checkpoint, ctx.global_step)
        self._prepare_output_dir(ctx)
        return ctx

    def _settle_source(self, cfg: TrainConfig, is_main: bool) -> TrainConfig:
        """`data_source: auto` -> the source `data_path` holds, logged once, before the cache
        identity and `config.yaml` see it (forecasting then reads the data as training did);
        and the one warning of a window longer than `max_context`."""
        note = long_window_note(cfg)
        if note and is_main:
            log.warning("%s", note)
        if cfg.data_source != AUTO_SOURCE:
            return cfg
        spec = settle_data_source(DataSpec.from_mapping(cfg.to_dict()), announce=is_main)
        self.cfg = dataclasses.replace(cfg, data_source=spec.data_source)
        return self.cfg

    def default_callbacks(self) -> list[TrainCallback]:
        """The built-ins a config asks for; `CallbackList` orders them by their roles."""
        cfg = self.cfg
        make = CALLBACKS.get
        callbacks: list[TrainCallback] = [
            make("grad_clip")(cfg.resolved_max_grad_norm),
            make("non_finite_guard")(cfg.nan_policy),
            make("graceful_stop")(),
            make("validation")(cfg.val_interval),
            make("best_checkpoint")(),
            make("metrics_jsonl")(cfg.log_interval),
            *[make(name)(cfg.log_interval) for name in cfg.loggers],  # the same records
            make("periodic_checkpoint")(cfg.ckpt_interval, cfg.keep_last),
            make("summary")(),
        ]
        if cfg.activation_checkpointing:
            callbacks.append(make("activation_checkpointing")())
        if cfg.ema:
            callbacks.append(make("ema")(cfg.ema_decay))
        if cfg.forecast_val_origins:
            origins, samples = cfg.forecast_val_origins, cfg.forecast_val_sample_count
            callbacks.append(make("forecast_validation")(origins, samples))
        if cfg.early_stopping_patience:
            callbacks.append(make("early_stopping")(cfg.early_stopping_patience))
        if cfg.progress_bar:
            callbacks.append(make("progress_bar")())
        return callbacks

    def _resolve_user_callbacks(self) -> list[TrainCallback]:
        resolved = []
        for item in self._user_callbacks:
            if isinstance(item, str):
                cls = CALLBACKS.get(item)
                item = cls()
            if not isinstance(item, TrainCallback):
                raise TypeError(
                    f"callbacks: {item!r} is not a TrainCallback (subclass "
                    "kronos_engine.callback.TrainCallback)"
                )
            resolved.append(item)
        return resolved

    def _make_strategy(self) -> Strategy:
        strategy = self.cfg.strategy or DEFAULT_STRATEGY[self.cfg.train_type]
        cls = STRATEGIES.get(strategy)
        check_strategy_train_type(cls, strategy, self.cfg.train_type)
        return cls(self.cfg)

    def _load_data(self, executor: Executor):
        from kronos_engine.training.shared_data import load_shared_splits

        # Local rank 0 builds or validates the store, every rank maps it (one copy a machine).
        return load_shared_splits(DataSpec.from_mapping(self.cfg.to_dict()), executor)

    def _make_loaders(self, splits, executor: Executor):
        from kronos_engine.data import WindowSampler
        from kronos_engine.errors import DataError

        cfg = self.cfg
        rank, world = executor.rank, executor.world_size
        train_sampler = WindowSampler(
            splits.train,
            mode=cfg.sampling,
            num_samples=cfg.train_samples_per_epoch,
            seed=cfg.seed,
            rank=rank,
            world_size=world,
        )
        if train_sampler.num_samples_per_rank == 0:
            raise DataError(
                f"train split: {len(splits.train)} windows give no sample to each of {world} "
                "processes; use more data or fewer processes"
            )
        train_loader = self._loader(splits.train, train_sampler)
        val_loader = None
        if splits.val is not None:
            val_sampler = WindowSampler(
                splits.val,
                mode="sequential",
                num_samples=cfg.val_samples,
                seed=cfg.seed,
                rank=rank,
                world_size=world,
            )
            val_loader = self._loader(splits.val, val_sampler)
        return train_loader, train_sampler, val_loader

    def _loader(self, dataset, sampler) -> DataLoader:
        from kronos_engine.data import collate_windows

        cfg = self.cfg
        # A private generator: creating an iterator then never draws from the global RNG,
        # which training (dropout, s1 sampling) and exact resume depend on.
        generator = torch.Generator().manual_seed(cfg.seed)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_windows,
            pin_memory=torch.cuda.is_available() and cfg.device != "cpu",
            persistent_workers=cfg.num_workers > 0,
            generator=generator,
            worker_init_fn=_leave_process_group,
        )

    def _prepare_output_dir(self, ctx: TrainContext) -> None:
        if ctx.is_main:
            if not self.cfg.resume:
                clear_previous_run(ctx.output_dir)  # only reached with overwrite (check)
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            write_config(RunLayout(ctx.output_dir).config, self.cfg)
            ctx.strategy.write_run_files(ctx.output_dir)
        ctx.executor.barrier()


def _still_newest(resume: str, checkpoint: Path) -> bool:
    """`checkpoint` (found by `check` before the output dir was held) is still the one
    `find_resume_checkpoint(resume)` picks: `resume` names it, or it is the newest there."""
    path = Path(resume)
    if (path / MANIFEST).exists() or path == checkpoint:
        return True
    layout = RunLayout(path)
    candidates = list_checkpoints(layout.checkpoints if layout.checkpoints.is_dir() else path)
    return bool(candidates) and candidates[-1] == checkpoint


def _leave_process_group(worker_id: int) -> None:
    """DataLoader workers get a process group of their own, so a SIGTERM/SIGINT sent to the
    trainer's group (torchrun forwards a preemption with killpg; Ctrl-C in a shell) reaches only
    the trainer, which finishes the step and checkpoints. In the group, torch's worker handler
    dies on a SIGTERM not sent by its parent and the trainer fails with "DataLoader worker ...
    is killed by signal" instead of stopping. Workers still exit with the trainer."""
    try:
        os.setpgid(0, 0)
    except OSError:  # pragma: no cover - e.g. a platform without process groups
        pass


def _configure_determinism(cfg: TrainConfig) -> None:
    if cfg.deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
