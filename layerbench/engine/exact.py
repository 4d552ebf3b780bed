"""Exact mode: every decode, draft and verification step computes each of its rows exactly as that row would be
computed alone, so greedy self-speculative, layer-skip, fixed-shape (CUDA graph) and split-device decoding give
autoregressive decoding's tokens bit for bit in any dtype, not only where float32 hides the difference.

Why it is needed: a kernel's reduction order may depend on the shape it is given (a one-row product takes
another path than a five-row one; an eager decode reads a span of the cache where a fixed-shape step reads all of
it under a mask), and in bfloat16 a different rounding turns near-ties into different tokens.

How: one fixed row count R for every step of a run. A step of n rows runs as ceil(n / R) tiles of exactly R rows
through the one forward (`Engine.forward` without a host-known start: the whole cache under a mask), the last tile
padded with zero rows. Padding rows sit at the positions right after the real ones, so their keys and values land
where no real query can see them and are overwritten before any query could; their outputs are dropped. A step's
logits are computed in the same tiles. With every shape fixed, each kernel computes row r the same way whatever
the other rows hold and wherever the row sits in the tile: `python -m bench exactness` shows it per kernel on the
machine at hand, and tests/unit/test_exact.py end to end.

Prefill is not tiled: every strategy runs the same prefill, so it cannot make two strategies differ.
"""
from __future__ import annotations

from typing import Callable

import torch

ROWS = 8  # R: rows per tile; a verification of d + 1 <= R rows is one tile (see README: what exact mode costs)


def tile_spans(n: int, rows: int) -> list[tuple[int, int]]:
    """[start, end) of each tile of `rows` rows over n rows (the last one may be short and is padded)."""
    return [(c, min(c + rows, n)) for c in range(0, n, rows)]


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, m, ...) -> (B, rows, ...) with zero rows appended (m <= rows)."""
    m = x.shape[1]
    if m == rows:
        return x
    return torch.cat([x, x.new_zeros((x.shape[0], rows - m, *x.shape[2:]))], dim=1)


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int) -> torch.Tensor:
    """fn applied to the rows of x (..., d) in padded tiles of exactly `rows` rows, (1, rows, d) each; returns
    (..., d_out) for the real rows."""
    lead = x.shape[:-1]
    flat = x.reshape(1, -1, x.shape[-1])
    outs = [fn(pad_rows(flat[:, a:b], rows))[:, : b - a] for a, b in tile_spans(flat.shape[1], rows)]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.reshape(*lead, out.shape[-1])
