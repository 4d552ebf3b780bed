"""A preallocated key/value cache.

The attention modules of HF transformers only call `cache.update(key, value, layer_idx)`; this class answers
that call by writing into fixed buffers (no `torch.cat` per step) and can be cropped in O(1) after a rejected
speculation. Each layer keeps its own length, so a layer that is skipped simply writes nothing.
"""
from __future__ import annotations

from typing import Any

import torch


class KVCache:
    def __init__(self, num_layers: int, max_length: int) -> None:
        self.max_length = max_length
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer_idx] is None:
            b, h, _, d = key_states.shape
            self.keys[layer_idx] = key_states.new_empty(b, h, self.max_length, d)
            self.values[layer_idx] = value_states.new_empty(b, h, self.max_length, value_states.shape[-1])
        start = self.lengths[layer_idx]
        end = start + key_states.shape[-2]
        if end > self.max_length:
            raise RuntimeError(f"KV cache overflow: {end} > {self.max_length} positions")
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        self.lengths[layer_idx] = end
        return keys[:, :, :end], values[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def crop(self, length: int) -> None:
        """Forget every position >= length in every layer."""
        self.lengths = [min(n, length) for n in self.lengths]
