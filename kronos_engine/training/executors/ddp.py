"""DistributedDataParallel across processes started by torchrun (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import contextlib
import datetime
import gc
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kronos_engine import distenv
from kronos_engine.training.executors.base import Executor


class DDPExecutor(Executor):
    """Joins the torchrun job: creates the process group unless one exists, and then owns it
    until `close` destroys it (a group created by the caller is left to the caller)."""

    def __init__(self, device_type: str, precision: str = "fp32", timeout_s: float = 600) -> None:
        local_rank = distenv.local_rank()
        if device_type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        super().__init__(device, precision)
        self.owns_process_group = not dist.is_initialized()
        if self.owns_process_group:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        self.backend = backend
        self.local_rank = local_rank

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def world_size(self) -> int:
        return dist.get_world_size()

    def barrier(self) -> None:
        dist.barrier()

    def close(self, graceful: bool = True) -> None:
        """Destroy the process group this executor created, in an order that cannot abort a rank.

        Rank 1 sometimes died at exit with `terminate called without an active exception`
        (SIGABRT): `destroy_process_group` only unregisters the gloo group, the C++ object lives
        on while the DDP model's reducer (kept alive by the run's context, and by reference
        cycles until a garbage collection) holds it, and it was then destroyed during
        interpreter exit, after the peer had already closed its sockets, with its worker threads
        still joinable. So the caller drops the model first; here: collect (the group is freed
        while every peer is still connected), meet at a barrier (graceful: after a successful
        run, so no rank tears gloo down while a peer's last collective is in flight; skipped
        after an error, a peer may be gone), destroy the group, collect again."""
        gc.collect()
        if self.owns_process_group and dist.is_available() and dist.is_initialized():
            if graceful:
                dist.barrier()
            dist.destroy_process_group()
        self.owns_process_group = False
        gc.collect()

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    @contextlib.contextmanager
    def accumulate(self, model: nn.Module, sync: bool) -> Iterator[None]:
        if sync or not isinstance(model, DistributedDataParallel):
            yield
        else:
            with model.no_sync():
                yield

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone().to(self.device)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone().to(self.device)
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out
