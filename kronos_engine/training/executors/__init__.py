"""Executors: one process (`local`) or DistributedDataParallel (`ddp`, chosen under torchrun)."""

from __future__ import annotations

import torch

from kronos_engine.config.rules import resolve_device
from kronos_engine.distenv import launched_by_torchrun
from kronos_engine.training.executors.base import Executor
from kronos_engine.training.executors.ddp import DDPExecutor
from kronos_engine.training.executors.local import LocalExecutor

__all__ = [
    "Executor",
    "LocalExecutor",
    "DDPExecutor",
    "launched_by_torchrun",
    "make_executor",
    "resolve_device_type",
]


def resolve_device_type(device: str) -> str:
    """The device a run trains on, by the one device rule of every command
    (`config.rules.resolve_device`): `auto`, `cpu`, `cuda` or `cuda:N` (one line when this
    machine lacks it)."""
    return str(resolve_device(device, "device"))


def make_executor(device: str = "auto", precision: str = "fp32") -> Executor:
    """DDP when launched by torchrun with more than one process, else one local process.
    The caller owns the executor and ends it with `close` (which destroys a DDP process group).
    Under torchrun each process takes its `LOCAL_RANK` GPU, so `cuda:N` only says "cuda"."""
    device_type = resolve_device_type(device)
    if launched_by_torchrun():
        return DDPExecutor(torch.device(device_type).type, precision)
    return LocalExecutor(torch.device(device_type), precision)
