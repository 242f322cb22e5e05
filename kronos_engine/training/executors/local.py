"""One process on CPU or one GPU, launched with plain `python`."""

from __future__ import annotations

import torch

from kronos_engine.training.executors.base import Executor


class LocalExecutor(Executor):
    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        super().__init__(device, precision)
        if device.type == "cuda":
            torch.cuda.set_device(device)
