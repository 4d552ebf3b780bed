"""Rotary position embeddings computed from a model config: inverse frequencies per rope type (registry), a
cos/sin table over positions, and the rotation itself (rotate-half convention, optionally on a leading part of
each head: `partial_rotary_factor`).

Supported rope types: default, linear, llama3 (Llama 3.1+), yarn (Qwen 2.5 long context and others).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from layerbench.errors import UsageError


@dataclass(frozen=True)
class RopeParameters:
    rope_type: str
    theta: float
    dim: int  # rotated dimensions per head
    values: dict  # the config's remaining rope parameters (factor, ...)
    max_position_embeddings: int


def rope_parameters(config, head_dim: int) -> RopeParameters:
    """The rope settings of a config, whether it uses `rope_parameters` (transformers 5) or the older
    `rope_scaling` + `rope_theta` attributes."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
    return RopeParameters(rope_type, float(params["rope_theta"]), int(head_dim * partial), params,
                          int(getattr(config, "max_position_embeddings", 2048)))


def _base_inv_freq(p: RopeParameters) -> torch.Tensor:
    return 1.0 / (p.theta ** (torch.arange(0, p.dim, 2, dtype=torch.int64).float() / p.dim))


def _default(p: RopeParameters) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(p), 1.0


def _linear(p: RopeParameters) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(p) / p.values["factor"], 1.0


def _llama3(p: RopeParameters) -> tuple[torch.Tensor, float]:
    """Long wavelengths are divided by `factor`, short ones kept, and the band between interpolated."""
    inv_freq = _base_inv_freq(p)
    v = p.values
    factor, low, high = v["factor"], v["low_freq_factor"], v["high_freq_factor"]
    context = v["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(medium, smoothed, scaled), 1.0


def _yarn(p: RopeParameters) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones, with a linear ramp between the correction
    dimensions, and scale cos/sin by the attention factor."""
    v = p.values
    original = v["original_max_position_embeddings"]
    factor = v.get("factor") or p.max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = v.get("attention_factor")
    if attention_factor is None:
        m, m_all = v.get("mscale"), v.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return p.dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(p.theta))

    low, high = correction_dim(v.get("beta_fast") or 32), correction_dim(v.get("beta_slow") or 1)
    if v.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, p.dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(p.dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    pos_freqs = p.theta ** (torch.arange(0, p.dim, 2).float() / p.dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


ROPE_TYPES: dict[str, Callable[[RopeParameters], tuple[torch.Tensor, float]]] = {
    "default": _default,
    "linear": _linear,
    "llama3": _llama3,
    "yarn": _yarn,
}


class RotaryTable:
    """cos/sin for positions [0, n) in the model dtype, one table per device the blocks compute on, extended on
    demand until `pin`ned. Once pinned (captured steps read it), the pinned tables are never rebound: a longer
    eager pass (perplexity of a long reference, say) reads a separate, longer table instead."""

    def __init__(self, config, head_dim: int, devices: list[torch.device], dtype: torch.dtype) -> None:
        p = rope_parameters(config, head_dim)
        if p.rope_type not in ROPE_TYPES:
            raise UsageError(f"rope type {p.rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
        self.inv_freq, self.attention_scaling = ROPE_TYPES[p.rope_type](p)
        self.dim, self.dtype = p.dim, dtype
        empty = torch.empty(0, p.dim, dtype=dtype)
        self.tables = {torch.device(d): (empty.to(d), empty.to(d)) for d in devices}
        self.longer: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # used past a pinned length
        self.pinned = False

    @property
    def length(self) -> int:
        return next(iter(self.tables.values()))[0].shape[0]

    def _table(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.arange(length, device=device).float()[:, None] * self.inv_freq.to(device)[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * self.attention_scaling).to(self.dtype), (emb.sin() * self.attention_scaling).to(self.dtype)

    def reserve(self, length: int) -> None:
        if length <= self.length:
            return
        length = max(length, 2 * self.length, 256)
        if self.pinned:
            if not self.longer or next(iter(self.longer.values()))[0].shape[0] < length:
                self.longer = {d: self._table(length, d) for d in self.tables}
            return
        self.tables = {d: self._table(length, d) for d in self.tables}

    def pin(self, length: int) -> None:
        """Size the tables for `length` positions (exactly, unless they are longer already), then never rebind
        them."""
        if length > self.length:
            self.tables = {d: self._table(length, d) for d in self.tables}
        self.pinned = True

    def unpin(self) -> None:
        """No captured step reads the tables any more: they may grow again."""
        self.pinned = False

    def buffers(self) -> list[torch.Tensor]:
        return [t for pair in self.tables.values() for t in pair]

    def rows(self, positions: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of the positions in a device tensor (T,), on its device, shaped (1, 1, T, dim) for (B, H, T, D)
        heads. `bound` (host-known, > every position) sizes the table; a pinned table is read by captured steps
        (graph-safe: gathered by the tensor) and never rebound, so a longer eager pass reads a separate table."""
        self.reserve(bound)
        cos, sin = self.tables[positions.device] if bound <= self.length else self.longer[positions.device]
        return cos[positions][None, None], sin[positions][None, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, H, T, D) and keys (B, KV, T, D); dimensions past cos.shape[-1] pass through."""
    d = cos.shape[-1]
    if d == q.shape[-1]:
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    q_rot = q[..., :d] * cos + _rotate_half(q[..., :d]) * sin
    k_rot = k[..., :d] * cos + _rotate_half(k[..., :d]) * sin
    return torch.cat([q_rot, q[..., d:]], dim=-1), torch.cat([k_rot, k[..., d:]], dim=-1)
