"""A faster few-row product for nn.Linear on CPU, where decoding spends most of its time.

Decoding multiplies one row (a token) or a few rows (the k+1 tokens of a speculative verification) by every
weight matrix, so it is bound by how fast the BLAS streams the weights. With fp32 weights on CPU, MKL's
one-row path behind `F.linear` is slow, while `torch.mm(W, x.T)` (the (out, in) weight as the left operand)
computes two rows in well under the time `F.linear` takes for one. So a single row is computed as two copies
of itself, and up to MAX_ROWS rows take the same product (about 2x faster than `F.linear` at 1-2 rows, 1.3x at
5, no slower at 8-16 for the decoder layers on the development machine; `bench/linear_kernels.py` measures
it).

The weights are not copied or re-laid out: the modules only change class, so state dicts, tied weights and
hooks are untouched and `restore_linears` undoes it.
"""
from __future__ import annotations

import torch
from torch import nn

MAX_ROWS = 16  # from about 8 rows on, F.linear's ordinary GEMM is as fast


class FewRowLinear(nn.Linear):
    """nn.Linear whose forward takes the weight-as-left-operand GEMM for up to MAX_ROWS rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n > MAX_ROWS:
            return super().forward(x)
        if n == 1:
            rows = torch.cat([rows, rows])
        out = torch.mm(self.weight, rows.t()).t()[:n]
        if self.bias is not None:
            out = out + self.bias
        return out.contiguous().view(*x.shape[:-1], self.out_features)


def few_row_kernel_applies(model: nn.Module) -> bool:
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype == torch.float32


def use_few_row_linears(model: nn.Module) -> int:
    """Switch every plain nn.Linear of the model to FewRowLinear in place; returns how many were switched."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowLinear
            n += 1
    return n


def restore_linears(model: nn.Module) -> None:
    for module in model.modules():
        if type(module) is FewRowLinear:
            module.__class__ = nn.Linear
