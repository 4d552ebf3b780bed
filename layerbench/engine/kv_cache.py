"""A preallocated key/value cache for one sequence (or, for a batched scoring pass, a batch of right-padded ones).

Every decoder layer owns a slot of shape (batch, kv_heads, capacity, head_dim) for keys and one for values, on the
device that layer computes on (a model split over devices keeps each layer's cache beside its weights). Position
p of the sequence is always stored at index p, so a rejected speculation needs no crop: the next step simply
overwrites the positions it re-computes, and attention only reads positions below the current end. The slots are
allocated once and never rebound (captured CUDA graphs keep their addresses).
"""
from __future__ import annotations

from typing import Sequence

import torch


class KVCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device | str | Sequence[torch.device], zeroed: bool = False, batch: int = 1) -> None:
        """`device`: one device for every layer, or one per layer. `zeroed`: for static steps, which read every
        position under a mask (0 x garbage could be NaN). `batch`: sequences side by side (scoring only)."""
        devices = [device] * num_layers if isinstance(device, (str, torch.device)) else list(device)
        if len(devices) != num_layers:
            raise ValueError(f"{len(devices)} devices for {num_layers} cache layers")
        self.capacity = capacity
        allocate = torch.zeros if zeroed else torch.empty
        shape = (batch, kv_heads, capacity, head_dim)
        self.keys = [allocate(shape, dtype=dtype, device=d) for d in devices]
        self.values = [allocate(shape, dtype=dtype, device=d) for d in devices]

    def write(self, layer: int, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store keys/values (batch, kv_heads, T, head_dim) at the positions in a device tensor (T,) (graph-safe:
        no host value is read)."""
        self.keys[layer].index_copy_(2, positions, keys)
        self.values[layer].index_copy_(2, positions, values)

    def read(self, layer: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions start .. end-1, each (batch, kv_heads, end-start, head_dim) (views)."""
        return self.keys[layer][:, :, start:end], self.values[layer][:, :, start:end]

    def buffers(self) -> list[torch.Tensor]:
        return [*self.keys, *self.values]

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())
