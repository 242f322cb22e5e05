"""Helpers for the fine-tuning toolbox tests: crash-and-resume against an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from engine_helpers import Recorder, run, tiny_cfg

from kronos_engine import TrainCallback


class Crash(Exception):
    pass


class CrashAfterStep(TrainCallback):
    """A kill right after step `step` (its checkpoint, if due, is written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, ctx) -> None:
        if ctx.global_step == self.step:
            raise Crash(f"killed after step {self.step}")


class LRs(TrainCallback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_step_end(self, ctx) -> None:
        self.lrs.append(ctx.lr)


def records(output_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock field."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines]
    for r in out:
        r.pop("samples_per_s", None)
    return out


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_resume_is_bit_exact(tmp_path: Path, crash_step: int, **overrides: Any):
    """Run straight, then crash after `crash_step` and resume: the same losses (bit for bit),
    metrics, weights and best metric. Returns (straight ctx, resumed ctx)."""
    straight_rec = Recorder()
    straight = run(tiny_cfg(tmp_path / "straight", **overrides), straight_rec)
    cfg = tiny_cfg(tmp_path / "crashed", **overrides)
    try:
        run(cfg, CrashAfterStep(crash_step))
    except Crash:
        pass
    else:  # pragma: no cover - the crash must happen
        raise AssertionError("the run did not crash")
    resumed_rec = Recorder()
    resumed_cfg = tiny_cfg(tmp_path / "crashed", resume=str(cfg.resolved_output_dir), **overrides)
    resumed = run(resumed_cfg, resumed_rec)
    assert resumed.global_step == straight.global_step
    # From the last checkpoint at or before the crash on, the very same losses.
    assert len(straight_rec.losses) - crash_step <= len(resumed_rec.losses)
    assert resumed_rec.losses == straight_rec.losses[-len(resumed_rec.losses) :]
    ws, wr = state(straight.unwrapped_model), state(resumed.unwrapped_model)
    assert ws.keys() == wr.keys()
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert records(straight.output_dir) == records(resumed.output_dir)
    assert resumed.best_metric == straight.best_metric
    return straight, resumed
