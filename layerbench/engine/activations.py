"""Activation functions by the names Hugging Face configs use (`hidden_act`, `activation_function`, ...)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from layerbench.errors import UsageError

Activation = Callable[[torch.Tensor], torch.Tensor]

ACTIVATIONS: dict[str, Activation] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
}


def get_activation(name: str) -> Activation:
    if name not in ACTIVATIONS:
        raise UsageError(f"activation {name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]
