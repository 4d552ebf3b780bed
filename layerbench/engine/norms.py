"""Normalization layers as functions of a norm module's weights (the module's own forward is never called)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Norm = Callable[[torch.Tensor], torch.Tensor]


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.float()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def rms_norm(module: nn.Module, eps: float) -> Norm:
    """Llama-style RMSNorm: normalize in float32, cast back, then scale by the weight."""
    weight = module.weight
    return lambda x: weight * _rms(x, eps).to(x.dtype)


def rms_norm_plus_one(module: nn.Module, eps: float) -> Norm:
    """Gemma-style RMSNorm: scale by (1 + weight) in float32, then cast back."""
    weight = module.weight
    return lambda x: (_rms(x, eps) * (1.0 + weight.float())).to(x.dtype)


def layer_norm(module: nn.Module, eps: float) -> Norm:
    weight, bias = module.weight, module.bias
    return lambda x: F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


# Family.norm_kind -> binder(norm module, eps) -> function
NORMS: dict[str, Callable[[nn.Module, float], Norm]] = {
    "rms": rms_norm,
    "rms_plus_one": rms_norm_plus_one,
    "layer": layer_norm,
}
