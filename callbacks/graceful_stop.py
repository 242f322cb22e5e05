"""SIGTERM/SIGINT: finish the current step, write a resumable checkpoint, then stop."""

from __future__ import annotations

import logging
import signal

import torch

from kronos_engine.callback import TrainCallback
from kronos_engine.context import StopReason, TrainContext
from kronos_engine.registry import CALLBACKS

log = logging.getLogger("kronos_engine")


@CALLBACKS.register("graceful_stop")
class GracefulStop(TrainCallback):
    """Its role (`signals`) runs it before `periodic_checkpoint`: it marks the context as
    preempted (`ctx.stop_signal`) in `on_step_end`, and the checkpoint callback then saves that
    step. The flag is max-reduced across ranks so every rank stops at the same step."""

    role = "signals"

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.received = signum

    def on_train_begin(self, ctx: TrainContext) -> None:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                return

    def on_step_end(self, ctx: TrainContext) -> None:
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=ctx.executor.device)
        if ctx.executor.all_reduce_max(flag).item() > 0:
            ctx.request_stop(StopReason.SIGNAL, signal=self.received or signal.SIGTERM)
            if ctx.is_main:
                log.warning(
                    "signal received: stopping after step %d with a checkpoint", ctx.global_step
                )

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def on_train_end(self, ctx: TrainContext) -> None:
        self._restore()

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self._restore()
