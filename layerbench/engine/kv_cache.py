"""A preallocated key/value cache for one sequence.

Every decoder layer owns a slot of shape (kv_heads, capacity, head_dim) for keys and one for values. Position p
of the sequence is always stored at index p, so a rejected speculation needs no crop: the next step simply
overwrites the positions it re-computes, and attention only reads positions below the current end.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device | str, zeroed: bool = False) -> None:
        """`zeroed`: for static steps, which read every position under a mask (0 x garbage could be NaN)."""
        self.capacity = capacity
        allocate = torch.zeros if zeroed else torch.empty
        self.keys = allocate(num_layers, 1, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = allocate(num_layers, 1, kv_heads, capacity, head_dim, dtype=dtype, device=device)

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store keys/values (1, kv_heads, T, head_dim) of positions start .. start+T-1."""
        end = start + keys.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} > {self.capacity} positions")
        self.keys[layer, :, :, start:end] = keys
        self.values[layer, :, :, start:end] = values

    def read(self, layer: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions start .. end-1, each (1, kv_heads, end-start, head_dim) (views)."""
        return self.keys[layer, :, :, start:end], self.values[layer, :, :, start:end]

    def write_at(self, layer: int, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Graph-safe write: positions is a device tensor (T,) of indices along the sequence axis."""
        self.keys[layer].index_copy_(2, positions, keys)
        self.values[layer].index_copy_(2, positions, values)

    @property
    def num_bytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()
