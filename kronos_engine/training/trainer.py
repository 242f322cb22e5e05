"""The one training loop: epochs -> micro-batches -> optimizer steps, with callback hooks.

Read `fit` top to bottom: every decision that is not the loop itself (clipping, validation,
checkpoints, logging, stopping) lives in a callback; everything that differs between one process
and several lives in the executor.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass

import torch

from kronos_engine.context import StopReason, TrainContext
from kronos_engine.run import outputs as run_dir
from kronos_engine.strategy import StepOutput
from kronos_engine.training.finetune import describe_parameters

log = logging.getLogger("kronos_engine")


@dataclass(frozen=True)
class EpochPlan:
    """How one rank's epoch splits into micro-batches and accumulation windows."""

    num_samples: int
    batch_size: int
    grad_accum_steps: int

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def num_steps(self) -> int:
        return math.ceil(self.num_batches / self.grad_accum_steps)

    def window(self, batch_idx: int) -> tuple[int, int]:
        """First and one-past-last batch index of the window holding `batch_idx`."""
        start = (batch_idx // self.grad_accum_steps) * self.grad_accum_steps
        return start, min(start + self.grad_accum_steps, self.num_batches)

    def samples_between(self, start_batch: int, end_batch: int) -> int:
        return min(end_batch * self.batch_size, self.num_samples) - start_batch * self.batch_size


class StepMeter:
    """Sample-weighted sums of the loss and its parts over one accumulation window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, output: StepOutput, batch_size: int) -> None:
        values = {"loss": output.loss.detach(), **output.parts}
        for name, value in values.items():
            weighted = value.detach().float() * batch_size
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.count += batch_size

    def reduce(self, ctx: TrainContext) -> dict[str, float]:
        """Global sample-weighted means across ranks (one small all-reduce)."""
        names = list(self.sums)
        vector = torch.stack([self.sums[n].to(torch.float64) for n in names])
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=vector.device)
        reduced = ctx.executor.all_reduce_sum(torch.cat([vector, count]))
        total = reduced[-1].item()
        return {n: reduced[i].item() / total for i, n in enumerate(names)}


def _library_log_handler() -> logging.Handler | None:
    """From the Python API nobody configured logging, and the run would be silent: show the
    engine's INFO lines on stderr for the duration of `fit` (the CLI configures its own)."""
    if log.hasHandlers():
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """Before long work the run says its size, and after its first steps (`steps`, or
    `seconds` of wall clock) the time it needs. Rank 0 only; it reads the clock and nothing
    else (no RNG, no metrics record), so an exact resume is unchanged."""

    def __init__(self, steps: int = 5, seconds: float = 30.0) -> None:
        self.steps, self.seconds = steps, seconds
        self.first, self.t0, self.done = 0, 0.0, False

    def begin(self, ctx: TrainContext) -> None:
        cfg, per_epoch = ctx.cfg, ctx.steps_per_epoch
        whole = cfg.epochs * per_epoch
        size = f"{cfg.epochs} epochs x {per_epoch} steps"
        if ctx.total_steps < whole:
            size = f"max_steps; {size} would be {whole}"
        resumed = f", resuming at step {ctx.global_step}" if ctx.global_step else ""
        log.info(
            "%s: %d steps (%s)%s, %d process(es) on %s, writing to %s",
            cfg.train_type, ctx.total_steps, size, resumed, ctx.world_size, ctx.executor.device,
            ctx.output_dir,
        )  # fmt: skip
        self.first, self.t0, self.done = ctx.global_step, time.perf_counter(), False

    def step(self, ctx: TrainContext) -> None:
        """After an optimizer step: once enough steps are timed, one line with the estimate."""
        if self.done:
            return
        taken, elapsed = ctx.global_step - self.first, time.perf_counter() - self.t0
        if taken < self.steps and elapsed < self.seconds:
            return
        self.done = True
        left = ctx.total_steps - ctx.global_step
        if left > 0:
            per_step = elapsed / max(taken, 1)
            log.info(
                "about %s per step (the first %d steps): the run needs about %s more "
                "(%d steps; validation and checkpoints not included)",
                _duration(per_step), taken, _duration(per_step * left), left,
            )  # fmt: skip


class Trainer:
    """Runs `ctx` to completion: `Trainer(ctx).fit()`."""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.meter = StepMeter()
        self.estimate = RunEstimate()
        self._window_t0 = time.perf_counter()

    # ------------------------------------------------------------------ top level
    def fit(self) -> TrainContext:
        ctx = self.ctx
        handler = _library_log_handler() if ctx.is_main else None
        try:
            if ctx.is_main:  # the run's size; peft's line, for every finetune_method
                self.estimate.begin(ctx)
                log.info("%s", describe_parameters(ctx.unwrapped_model))
            ctx.callbacks.fire("on_train_begin", ctx)
            while not self._finished():
                self._run_epoch()
            ctx.callbacks.fire("on_train_end", ctx)
            if handler is not None:
                reason = f", {ctx.stop_reason}" if ctx.stop_reason else ""
                log.info(
                    "%s training finished at step %d (epoch %d%s); results in %s (best/, "
                    "metrics.jsonl, summary.json, checkpoints/)",
                    ctx.cfg.train_type,
                    ctx.global_step,
                    ctx.epoch,
                    reason,
                    ctx.output_dir,
                )
        except BaseException as error:
            ctx.callbacks.fire_error(ctx, error)
            raise
        finally:
            run_dir.release(ctx.output_dir)  # taken by the builder (rank 0)
            if handler is not None:
                log.removeHandler(handler)
                log.setLevel(logging.NOTSET)
        return ctx

    def _finished(self) -> bool:
        ctx, cfg = self.ctx, self.ctx.cfg
        if ctx.should_stop or ctx.epoch >= cfg.epochs:
            return True
        return cfg.max_steps is not None and ctx.global_step >= cfg.max_steps

    # ------------------------------------------------------------------ one epoch
    def _run_epoch(self) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        ctx.train_sampler.set_epoch(ctx.epoch, consumed=ctx.epoch_consumed)
        plan = EpochPlan(
            ctx.train_sampler.num_samples_per_rank, cfg.batch_size, cfg.grad_accum_steps
        )
        first_batch = ctx.epoch_consumed // cfg.batch_size
        ctx.model.train()
        ctx.callbacks.fire("on_epoch_begin", ctx)
        self.meter.reset()
        self._window_t0 = time.perf_counter()
        for batch_idx, batch in enumerate(ctx.train_loader, start=first_batch):
            self._micro_step(batch_idx, batch, plan)
            if ctx.should_stop:
                break
        if ctx.epoch_consumed >= plan.num_samples:
            ctx.epoch_ended = True
            ctx.callbacks.fire("on_epoch_end", ctx)
            ctx.epoch_ended = False
            ctx.epoch += 1
            ctx.epoch_consumed = 0

    # ------------------------------------------------------------------ one micro-batch
    def _micro_step(self, batch_idx: int, batch, plan: EpochPlan) -> None:
        ctx = self.ctx
        window_start, window_end = plan.window(batch_idx)
        window_samples = plan.samples_between(window_start, window_end)
        is_last_micro = batch_idx == window_end - 1
        batch = ctx.executor.to_device(batch)
        batch_size = ctx.strategy.batch_size_of(batch)

        ctx.callbacks.fire("on_batch_begin", ctx, batch)
        with ctx.executor.accumulate(ctx.model, sync=is_last_micro):
            with ctx.executor.autocast():
                output = ctx.strategy.training_step(ctx.model, batch, ctx)
            # Weight by this batch's share of the window: K micro-batches == one big batch.
            ctx.executor.backward(output.loss * (batch_size / window_samples))
        self.meter.add(output, batch_size)
        ctx.epoch_consumed += batch_size
        ctx.callbacks.fire("on_batch_end", ctx, output)
        if is_last_micro:
            self._optimizer_step(window_samples)

    # ------------------------------------------------------------------ one optimizer step
    def _optimizer_step(self, window_samples: int) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        ctx.last_metrics = self.meter.reduce(ctx)
        ctx.last_loss = ctx.last_metrics["loss"]
        ctx.skip_step = False
        ctx.grad_norm = None

        ctx.callbacks.fire("on_optimizer_step", ctx)  # clipping, non-finite checks
        if ctx.skip_step:
            ctx.skipped_steps += 1
        else:
            ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        if ctx.scheduler is not None:
            ctx.scheduler.step()

        ctx.global_step += 1
        ctx.total_samples += window_samples * ctx.world_size
        ctx.lr = ctx.optimizer.param_groups[0]["lr"]
        elapsed = time.perf_counter() - self._window_t0
        ctx.samples_per_second = window_samples * ctx.world_size / max(elapsed, 1e-9)
        self.meter.reset()

        ctx.callbacks.fire("on_step_end", ctx)
        if ctx.is_main:
            self.estimate.step(ctx)
        if cfg.max_steps is not None and ctx.global_step >= cfg.max_steps:
            ctx.request_stop(StopReason.MAX_STEPS)
        self._window_t0 = time.perf_counter()
