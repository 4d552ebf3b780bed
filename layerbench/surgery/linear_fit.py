"""Closed-form ridge fit of a residual affine map y ~ x + x W + b between two hidden states of the same model,
accumulated over calibration tokens (float64 normal equations, so memory does not grow with the token count).

By default position 0 is left out (the first token's huge activations, the attention sink, would dominate the
fit) and each token's row is divided by the norm of its input, so every token counts by its relative error;
`bench/fit_choices.py` measures these choices. The ridge term is `ridge` times the mean diagonal of the weighted
Gram matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ResidualFit:
    dim: int
    ridge: float = 1e-2
    skip_first: bool = True
    weighting: str = "inverse_norm"  # or "none"
    tokens: int = 0
    gram: torch.Tensor = field(init=False)  # sum of w^2 [x, 1]^T [x, 1]
    cross: torch.Tensor = field(init=False)  # sum of w^2 [x, 1]^T (y - x)
    residual_energy: float = 0.0  # sum of w^2 |y - x|^2
    target_energy: float = 0.0  # sum of w^2 |y|^2

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.dim + 1, self.dim + 1, dtype=torch.float64)
        self.cross = torch.zeros(self.dim + 1, self.dim, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x, y: (T, d) hidden states of one sequence at the map's input and target."""
        first = 1 if self.skip_first else 0
        x, y = x[first:].double().cpu(), y[first:].double().cpu()
        if x.shape[0] == 0:
            return
        if self.weighting == "inverse_norm":
            w = 1.0 / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        else:
            w = torch.ones_like(x[:, :1])
        xa = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1) * w
        r = (y - x) * w
        self.gram += xa.T @ xa
        self.cross += xa.T @ r
        self.residual_energy += float(r.pow(2).sum())
        self.target_energy += float((y * w).pow(2).sum())
        self.tokens += x.shape[0]

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(W (d x d), b (d,), report with the relative fit error before (identity) and after)."""
        lam = self.ridge * float(self.gram.diagonal()[:-1].mean())
        reg = torch.eye(self.dim + 1, dtype=torch.float64) * lam
        reg[-1, -1] = 0.0  # the bias is not shrunk
        theta = torch.linalg.solve(self.gram + reg, self.cross)
        after = self.residual_energy - 2 * float((theta * self.cross).sum()) + float((theta * (self.gram @ theta)).sum())
        report = {"calibration_tokens": self.tokens, "ridge": self.ridge, "skip_first_position": self.skip_first,
                  "row_weighting": self.weighting,
                  "relative_error_before": math.sqrt(self.residual_energy / self.target_energy),
                  "relative_error_after": math.sqrt(max(after, 0.0) / self.target_energy)}
        return theta[:-1], theta[-1], report


def residual_linear(W: torch.Tensor, b: torch.Tensor, like: torch.Tensor) -> nn.Linear:
    """nn.Linear computing x W + b, on the device and in the dtype of `like`."""
    d = W.shape[0]
    module = nn.Linear(d, d, bias=True, device=like.device, dtype=like.dtype)
    with torch.no_grad():
        module.weight.copy_(W.T)
        module.bias.copy_(b)
    return module
