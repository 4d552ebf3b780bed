"""Closed-form ridge fit of a residual affine map y ~ x + x W + b between two hidden states of the same model,
accumulated over calibration tokens (float64 normal equations, so memory does not grow with the token count).

By default position 0 is left out of the map (the first token's huge activations, the attention sink, would
dominate it) and gets its own fitted update instead: the mean of y - x at position 0, a constant, because the
sink's update barely depends on which token sits there. Each token's row is divided by the norm of its input, so
every token counts by its relative error. `bench/fit_choices.py` measures these choices. The ridge term is
`ridge` times the mean diagonal of the weighted Gram matrix.
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
    first: list = field(default_factory=list)  # (x, y) at position 0 of each sequence

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.dim + 1, self.dim + 1, dtype=torch.float64)
        self.cross = torch.zeros(self.dim + 1, self.dim, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x, y: (T, d) hidden states of one sequence at the map's input and target."""
        if self.skip_first:
            self.first.append((x[0].double().cpu(), y[0].double().cpu()))
        start = 1 if self.skip_first else 0
        x, y = x[start:].double().cpu(), y[start:].double().cpu()
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

    def solve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
        """(W (d x d), b (d,), the position-0 update (d,) or None, report with the relative fit errors before
        (identity) and after)."""
        lam = self.ridge * float(self.gram.diagonal()[:-1].mean())
        reg = torch.eye(self.dim + 1, dtype=torch.float64) * lam
        reg[-1, -1] = 0.0  # the bias is not shrunk
        theta = torch.linalg.solve(self.gram + reg, self.cross)
        after = self.residual_energy - 2 * float((theta * self.cross).sum()) + float((theta * (self.gram @ theta)).sum())
        report = {"calibration_tokens": self.tokens, "ridge": self.ridge, "skip_first_position": self.skip_first,
                  "row_weighting": self.weighting,
                  "relative_error_before": math.sqrt(self.residual_energy / self.target_energy),
                  "relative_error_after": math.sqrt(max(after, 0.0) / self.target_energy)}
        first_update = None
        if self.first:
            xs, ys = torch.stack([x for x, _ in self.first]), torch.stack([y for _, y in self.first])
            first_update = (ys - xs).mean(0)
            target = float(ys.norm(dim=-1).mean())
            report.update(position0_relative_error_before=float((ys - xs).norm(dim=-1).mean()) / target,
                          position0_relative_error_after=float((ys - xs - first_update).norm(dim=-1).mean()) / target)
        return theta[:-1], theta[-1], first_update, report


def residual_linear(W: torch.Tensor, b: torch.Tensor, like: torch.Tensor) -> nn.Linear:
    """nn.Linear computing x W + b, on the device and in the dtype of `like`."""
    d = W.shape[0]
    module = nn.Linear(d, d, bias=True, device=like.device, dtype=like.dtype)
    with torch.no_grad():
        module.weight.copy_(W.T)
        module.bias.copy_(b)
    return module


class StandIn(nn.Module):
    """x -> x + x W + b, except x -> x + c at position 0 (the attention sink) when `first_update` c is given."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, first_update: torch.Tensor | None, like: torch.Tensor) -> None:
        super().__init__()
        self.linear = residual_linear(W, b, like)
        self.first_update = None if first_update is None else nn.Parameter(
            first_update.to(device=like.device, dtype=like.dtype), requires_grad=False)
