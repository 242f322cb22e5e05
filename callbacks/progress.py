"""A tqdm progress bar over optimizer steps (rank 0)."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS


class _AboveBar:
    """A text stream whose complete lines are written with the bar cleared first and redrawn
    after (stdout and stderr may be one terminal: tqdm's own `write` only knows its file)."""

    def __init__(self, stream, bar: tqdm) -> None:
        self._stream, self._bar, self._pending = stream, bar, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, self._pending = self._pending.rsplit("\n", 1)
            with self._bar.get_lock():
                self._bar.clear()
                self._stream.write(done + "\n")
                self._stream.flush()
                self._bar.refresh()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@CALLBACKS.register("progress_bar")
class ProgressBar(TrainCallback):
    """While the bar is shown, log records and `print`s go through `tqdm.write`, so they land
    above the bar instead of breaking it."""

    role = "display"

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self._restore: list = []

    def on_train_begin(self, ctx: TrainContext) -> None:
        if ctx.is_main:
            self.bar = tqdm(
                total=ctx.total_steps, initial=ctx.global_step, unit="step", file=sys.stderr
            )
            self._redirect()

    def _redirect(self) -> None:
        stdout = sys.stdout
        sys.stdout = _AboveBar(stdout, self.bar)
        self._restore.append(lambda: setattr(sys, "stdout", stdout))
        seen = set()
        for name in (None, "kronos_engine"):
            for handler in logging.getLogger(name).handlers:
                stream = getattr(handler, "stream", None)
                if id(handler) in seen or stream not in (sys.__stderr__, sys.stderr, stdout):
                    continue
                seen.add(id(handler))
                handler.setStream(_AboveBar(stream, self.bar))
                self._restore.append(lambda h=handler, s=stream: h.setStream(s))

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        post = {"epoch": ctx.epoch, "loss": f"{ctx.last_loss:.4f}", "lr": f"{ctx.lr:.2e}"}
        if ctx.val_metrics:
            post["val"] = f"{ctx.val_metrics.get(ctx.strategy.metric_name, float('nan')):.4f}"
        self.bar.set_postfix(post, refresh=False)

    def _close(self) -> None:
        while self._restore:
            if hasattr(sys.stdout, "_pending"):
                sys.stdout.flush()
            self._restore.pop()()
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, ctx: TrainContext) -> None:
        self._close()

    def on_error(self, ctx: TrainContext, error: BaseException) -> None:
        self._close()
