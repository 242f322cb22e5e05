"""Keys and values of earlier tokens, kept so that a new token is computed alone.

Preallocated to a fixed capacity (the model context) so that decoding never reallocates; the
attention layers write at `length` and read `[:length + n]`, and the caller commits the new
tokens with `advance(n)` once every layer has seen them.
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer `(B, H, capacity, D)` key and value buffers with one shared length."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"KV cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.length = 0
        self._keys: dict[int, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new `(B, H, n, D)` keys/values of `layer`; return all keys/values so far."""
        n = k.shape[-2]
        end = self.length + n
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} tokens, capacity {self.capacity}")
        if layer not in self._keys:
            shape = (*k.shape[:-2], self.capacity, k.shape[-1])
            self._keys[layer] = k.new_empty(shape)
            self._values[layer] = v.new_empty(shape)
        keys, values = self._keys[layer], self._values[layer]
        keys[..., self.length : end, :] = k
        values[..., self.length : end, :] = v
        return keys[..., :end, :], values[..., :end, :]

    def advance(self, n: int) -> None:
        """Commit `n` new tokens: the next update writes after them."""
        if self.length + n > self.capacity:
            raise ValueError(f"KV cache overflow: {self.length + n} > {self.capacity}")
        self.length += n
