"""The blocks the engine runs in sequence: a transformer decoder layer (attention + MLP over the weights of one
HF layer module), and a fitted linear stand-in for a removed run of layers.

Shapes: hidden (B, T, d); queries (B, H, T, Dh); keys/values (B, KV, T, Dh); B is 1 except in batched scoring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from layerbench.engine.activations import get_activation
from layerbench.engine.attention import CAUSAL, attend, visible
from layerbench.engine.kv_cache import KVCache
from layerbench.engine.linear_kernels import LinearKernel, bind_projection
from layerbench.engine.norms import NORMS
from layerbench.engine.placement import module_device
from layerbench.engine.rope import apply_rotary
from layerbench.models.families import Family


@dataclass
class Step:
    """One forward over T new tokens at `positions` (a device tensor (T,), shared by every block of the pass), and
    how it meets the KV cache: keys/values are written at those indices, and attention reads a span of the cache.

    `start`, the first position, is given when the host knows it (every pass but a fixed-shape step): attention
    then reads only the keys that can be visible and leaves out the mask where all of them are. A fixed-shape
    step (captured as a CUDA graph, replayed at any position) gives None: it reads the whole cache under a mask
    built from `positions`, so no shape and no Python value in it depends on where it runs.
    """

    positions: torch.Tensor
    cache: KVCache
    start: int | None = None
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None
    device: torch.device | None = None  # where the blocks that use this view of the pass compute
    rows: int | None = None  # real rows, when the last ones pad an exact-mode tile (engine.exact)
    moved: dict = field(default_factory=dict)  # device -> this pass as blocks on that device see it
    _masks: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.positions.shape[0]

    @property
    def real_rows(self) -> int:
        """Token positions this pass computes for real (what the block counters are told)."""
        return self.length if self.rows is None else self.rows

    def key_span(self, window: int | None) -> tuple[int, int]:
        """The cache indices [first, end) attention reads: every key that can be visible to this pass."""
        if self.start is None:
            return 0, self.cache.capacity
        first = 0 if window is None else max(0, self.start - window + 1)
        return first, self.start + self.length

    def mask(self, window: int | None) -> torch.Tensor | str | None:
        """The mask of this step's queries over the keys `key_span(window)` reads: a boolean mask, CAUSAL, or
        None when every key read is visible (built once per window, outside any compiled block)."""
        first, end = self.key_span(window)
        if self.start is not None and self.length == 1:
            return None
        if self.start == 0 and (window is None or window >= end):
            return CAUSAL
        if window not in self._masks:
            self._masks[window] = visible(self.positions, torch.arange(first, end, device=self.positions.device),
                                          window)
        return self._masks[window]


BlockCompute = Callable[..., torch.Tensor]  # DecoderBlock.compute, or a compiled version of it


class DecoderBlock:
    """Pre-norm attention + MLP with the ingredients its family names, over one HF decoder layer's weights."""

    def __init__(self, layer: nn.Module, family: Family, config, slot: int, position: int,
                 kernel: LinearKernel) -> None:
        self.module, self.slot, self.position = layer, slot, position
        self.device = module_device(layer, f"decoder layer {position}")
        eps = getattr(config, family.eps_attr)
        norm = NORMS[family.norm_kind]

        def optional_norm(name: str | None):
            return norm(layer.get_submodule(name), eps) if name else None

        self.attn_norm, self.mlp_norm = norm(layer.get_submodule(family.attn_norm), eps), optional_norm(family.mlp_norm)
        self.post_attn_norm = optional_norm(family.post_attn_norm)
        self.post_mlp_norm = optional_norm(family.post_mlp_norm)
        self.qk_norms = tuple(optional_norm(n) for n in family.qk_norms) if family.qk_norms else None
        self.qkv = [bind_projection(layer.get_submodule(n), kernel) for n in family.qkv]
        self.o_proj = bind_projection(layer.get_submodule(family.o_proj), kernel)
        self.mlp_in = [bind_projection(layer.get_submodule(n), kernel) for n in family.mlp_in]
        self.mlp_out = bind_projection(layer.get_submodule(family.mlp_out), kernel)
        self.gated_mlp = family.gated_mlp
        self.act = get_activation(getattr(config, family.activation_attr))
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.split = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
        self.scale = family.attn_scale(config, self.head_dim, layer)
        self.window = family.window(config, position)
        self.softcap = getattr(config, family.attn_softcap_attr, None) if family.attn_softcap_attr else None

    def project_qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1, T, d) -> q (1, H, T, Dh), k and v (1, KV, T, Dh), q/k-normed when the family says so."""
        b, t, _ = h.shape
        if len(self.qkv) == 3:
            q, k, v = (p(h) for p in self.qkv)
        else:
            q, k, v = self.qkv[0](h).split(self.split, dim=-1)
        q = q.view(b, t, self.heads, self.head_dim)
        k = k.view(b, t, self.kv_heads, self.head_dim)
        if self.qk_norms:
            q, k = self.qk_norms[0](q), self.qk_norms[1](k)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)

    def attention(self, x: torch.Tensor, step: Step, keys: torch.Tensor, values: torch.Tensor,
                  mask: torch.Tensor | str | None) -> torch.Tensor:
        q, k, v = self.project_qkv(self.attn_norm(x))
        if step.cos is not None:
            q, k = apply_rotary(q, k, step.cos, step.sin)
        keys.index_copy_(2, step.positions, k)  # position p at index p (graph-safe: no host value is read)
        values.index_copy_(2, step.positions, v)
        first, end = step.key_span(self.window)
        out = attend(q, keys[:, :, first:end], values[:, :, first:end], self.scale, mask, self.softcap)  # (1, H, T, Dh)
        out = self.o_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))
        return self.post_attn_norm(out) if self.post_attn_norm else out

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp_norm(x)
        if not self.gated_mlp:
            out = self.mlp_out(self.act(self.mlp_in[0](h)))
        else:
            if len(self.mlp_in) == 2:
                gate, up = self.mlp_in[0](h), self.mlp_in[1](h)
            else:
                gate, up = self.mlp_in[0](h).chunk(2, dim=-1)
            out = self.mlp_out(self.act(gate) * up)
        return self.post_mlp_norm(out) if self.post_mlp_norm else out

    def compute(self, x: torch.Tensor, step: Step, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | str | None) -> torch.Tensor:
        """The block over its cache slot's key and value tensors (batch, kv_heads, capacity, head_dim) and a
        mask built outside: nothing in it indexes by layer, so one compiled graph serves every layer alike."""
        x = x + self.attention(x, step, keys, values, mask)
        return x + self.mlp(x)

    def __call__(self, x: torch.Tensor, step: Step, compute: BlockCompute | None = None) -> torch.Tensor:
        """`compute`: a compiled `DecoderBlock.compute`, for fixed-shape steps (engine.compiled)."""
        keys, values = step.cache.keys[self.slot], step.cache.values[self.slot]
        return (compute or DecoderBlock.compute)(self, x, step, keys, values, step.mask(self.window))


class StandInBlock:
    """A fitted stand-in for a removed run of layers (no attention, no cache): x + x W + b, and x + c at
    position 0 (see surgery.linear_fit.StandIn)."""

    slot = None
    position = None

    def __init__(self, module: nn.Module, kernel: LinearKernel) -> None:
        self.module = module
        self.device = module_device(module, "a stand-in")
        self.project = bind_projection(module.linear, kernel)
        self.first_update = module.first_update

    def __call__(self, x: torch.Tensor, step: Step, compute: BlockCompute | None = None) -> torch.Tensor:
        out = x + self.project(x)
        if self.first_update is None:
            return out
        return torch.where((step.positions == 0)[None, :, None], x + self.first_update, out)
