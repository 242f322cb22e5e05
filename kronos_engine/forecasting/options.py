"""`SamplingOptions`: how a forecast samples its tokens, as one value from the command line
(or the public keyword arguments) down to the generator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from kronos_engine.errors import ForecastError


@dataclass(frozen=True)
class SamplingOptions:
    """Temperature `T`, then top-k (if `top_k > 0`, `1` = greedy) or nucleus `top_p`, for
    `sample_count` sample paths per series; `seed` seeds the draws (None: the global stream).

    The defaults are the public `predict` defaults. `sample_count` is checked here, once;
    `T` is checked where a token is drawn (`sample_from_logits`), so forecasters that do not
    sample (the baselines) accept any `T`, as they always did.
    """

    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    sample_count: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.sample_count < 1:
            raise ForecastError(f"sample_count must be >= 1, got {self.sample_count}")

    def with_seed(self, seed: int | None) -> SamplingOptions:
        return dataclasses.replace(self, seed=seed)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A generator on `device` seeded with `seed`, or None without a seed."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))
