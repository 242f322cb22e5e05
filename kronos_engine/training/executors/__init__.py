"""Executors: one process (`local`) or DistributedDataParallel (`ddp`, chosen under torchrun)."""

from __future__ import annotations

import torch

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
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from kronos_engine.errors import ConfigError

        raise ConfigError("device: 'cuda' was requested but no CUDA device is available")
    return device


def make_executor(device: str = "auto", precision: str = "fp32") -> Executor:
    """DDP when launched by torchrun with more than one process, else one local process.
    The caller owns the executor and ends it with `close` (which destroys a DDP process group)."""
    device_type = resolve_device_type(device)
    if launched_by_torchrun():
        return DDPExecutor(device_type, precision)
    return LocalExecutor(torch.device(device_type), precision)
