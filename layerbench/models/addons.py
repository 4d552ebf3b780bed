"""Modules this toolkit adds to a loaded model: fitted stand-ins for removed layer runs, exit adapters, and a
draft head over a trimmed vocabulary.

They live in one registered submodule, `model.layerbench_addons`, so `model.parameters()` (and so every
parameter and byte count) includes them, and the engine finds them without being told. Hugging Face's own
forward ignores them.
"""
from __future__ import annotations

import torch
from torch import nn

ATTRIBUTE = "layerbench_addons"


class Addons(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # key: str(p), applied before the decoder layer at current position p (p == num_layers: after the last)
        self.stand_ins = nn.ModuleDict()
        # key: str(E), applied to the hidden state after block E - 1 before the final norm when exiting there
        self.exit_adapters = nn.ModuleDict()
        self.draft_head: DraftHead | None = None

    def is_empty(self) -> bool:
        return not self.stand_ins and not self.exit_adapters and self.draft_head is None


class DraftHead(nn.Module):
    """The LM head's rows for a subset of the vocabulary (a copy, counted in the model's bytes), for drafting:
    a self-speculative draft only proposes tokens, so it may ignore the rest; verification still scores every
    token."""

    def __init__(self, head: nn.Linear, token_ids: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("token_ids", token_ids.to(head.weight.device))
        self.linear = nn.Linear(head.in_features, len(token_ids), bias=head.bias is not None,
                                device=head.weight.device, dtype=head.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(head.weight[self.token_ids])
            if head.bias is not None:
                self.linear.bias.copy_(head.bias[self.token_ids])
        self.vocab_size = head.out_features


def get_addons(model: nn.Module, create: bool = False) -> Addons | None:
    addons = getattr(model, ATTRIBUTE, None)
    if addons is None and create:
        addons = Addons()
        model.add_module(ATTRIBUTE, addons)
    return addons
