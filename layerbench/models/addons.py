"""Modules this toolkit adds to a loaded model: fitted stand-ins for removed layer runs and exit adapters.

They live in one registered submodule, `model.layerbench_addons`, so `model.parameters()` (and so every
parameter and byte count) includes them, and the engine finds them without being told. Hugging Face's own
forward ignores them.
"""
from __future__ import annotations

from torch import nn

ATTRIBUTE = "layerbench_addons"


class Addons(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # key: str(p), applied before the decoder layer at current position p (p == num_layers: after the last)
        self.stand_ins = nn.ModuleDict()
        # key: str(E), applied to the hidden state after block E - 1 before the final norm when exiting there
        self.exit_adapters = nn.ModuleDict()

    def is_empty(self) -> bool:
        return not self.stand_ins and not self.exit_adapters


def get_addons(model: nn.Module, create: bool = False) -> Addons | None:
    addons = getattr(model, ATTRIBUTE, None)
    if addons is None and create:
        addons = Addons()
        model.add_module(ATTRIBUTE, addons)
    return addons
