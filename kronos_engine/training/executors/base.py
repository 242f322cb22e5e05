"""The executor interface: everything that differs between one process and many."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class Executor:
    """Owns device placement, wrapping, accumulation, reductions and rank gating.

    The trainer never asks "am I distributed?"; it calls these methods and the executor does the
    right thing for one process (`LocalExecutor`) or several (`DDPExecutor`).
    """

    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision

    # ---- topology ----
    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""

    def close(self, graceful: bool = True) -> None:
        """Release what this executor created (its process group); idempotent.

        `graceful` (after a successful run): every rank meets at a barrier first. Not graceful
        (after an error): no barrier, a peer may be gone. Drop the run's model (the context)
        before calling: a DDP model holds the process group."""

    # ---- model ----
    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """Context for one micro-step; `sync=False` skips gradient all-reduce (DDP no_sync)."""
        yield

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip to `max_norm` (inf = measure only); returns the total norm before clipping."""
        params = [p for p in model.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    # ---- data and reductions ----
    def to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        return batch

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (returns the input in one process)."""
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]
