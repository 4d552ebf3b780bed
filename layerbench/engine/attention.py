"""Scaled dot-product attention over cached keys/values, with grouped-query attention, sliding windows and
(Gemma 2) logit soft-capping.

Grouped-query attention never expands K/V: a causal prefill from position 0 uses SDPA's own `is_causal` with
`enable_gqa` (flash attention's case); otherwise the G query heads that share one KV head are folded into the
query length, (1, H, T, D) -> (1, KV, G*T, D), which every backend handles and which is exact. Masks are boolean,
True where a query may attend; `CAUSAL` stands for the plain causal mask over keys 0..T-1.

Which SDPA backend runs is chosen, not left to the dispatcher: `attention_backends` gives the ordered list the
engine enables around every pass on CUDA (cuDNN attention is left out by default: it costs ~1.25 ms of CPU per
call on an H200, more than a whole decode step should take).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from layerbench.errors import UsageError

CAUSAL = "causal"

# --attention_backend -> SDPA backends in priority order (the first that supports a call's inputs runs it)
BACKENDS: dict[str, list[SDPBackend]] = {
    "auto": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
}


def attention_backends(requested: str, device: torch.device) -> list[SDPBackend] | None:
    """The backends to enable, or None for torch's default dispatch (CPU, where auto changes nothing)."""
    if requested not in BACKENDS:
        raise UsageError(f"--attention_backend {requested!r} unknown; choose from {', '.join(BACKENDS)}")
    if device.type != "cuda" and requested == "auto":
        return None
    return BACKENDS[requested]


def describe(backends: list[SDPBackend] | None) -> dict:
    """What the log records as `generation.attention_kernel`."""
    if backends is None:
        return {"backends": "torch default dispatch (CPU)"}
    names = [b.name for b in backends]
    return {"backends": names,
            "prefill (causal, grouped-query)": names[0],
            "decode (1 token, no mask)": names[0],
            "verify / static steps (masked)": next(n for n in names if n != "FLASH_ATTENTION")}


def fold_queries(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(1, H, T, D) -> (1, KV, G*T, D); row g*T + t of KV head j is query head j*G + g at position t."""
    b, h, t, d = q.shape
    return q.reshape(b, kv_heads, (h // kv_heads) * t, d)


def unfold_output(out: torch.Tensor, heads: int) -> torch.Tensor:
    b, kv, gt, d = out.shape
    return out.reshape(b, heads, gt * kv // heads, d)


def visible(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int | None) -> torch.Tensor:
    """(T, S) boolean mask: key j is visible to query i when j <= i and (with a window W) j > i - W."""
    q, k = query_positions[:, None], key_positions[None, :]
    mask = k <= q
    if window is not None:
        mask &= k > q - window
    return mask


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | str | None,
           softcap: float | None = None) -> torch.Tensor:
    """q (1, H, T, D); k, v (1, KV, S, D); mask (T, S), CAUSAL, or None (every key visible). Returns
    (1, H, T, D)."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if isinstance(mask, str):
        if softcap is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=heads != kv_heads)
        positions = torch.arange(q.shape[2], device=q.device)
        mask = visible(positions, positions, None)
    groups = heads // kv_heads
    qf = fold_queries(q, kv_heads)
    folded_mask = mask.repeat(groups, 1) if mask is not None and groups > 1 else mask
    if softcap is None:
        out = F.scaled_dot_product_attention(qf, k, v, attn_mask=folded_mask, scale=scale)
    else:
        out = _softcapped(qf, k, v, scale, folded_mask, softcap)
    return unfold_output(out, heads)


def _softcapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None,
                softcap: float) -> torch.Tensor:
    """Attention with scores capped as softcap * tanh(scores / softcap) (no SDPA backend offers it)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)
