"""Structural edits of a decoder stack: really removing layers (not zeroing them) and counting layer calls."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

import torch
from torch import nn

from model_adapter import Adapter, get_adapter


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def keep_layers(model: nn.Module, adapter: Adapter, keep: list[int]) -> None:
    """Rebuild the decoder-layer list from the layers at positions `keep` (current indices), and update the config
    and each attention module's `layer_idx` so the KV cache stays consistent."""
    layers = adapter.layers(model)
    kept = [layers[i] for i in keep]
    adapter.set_layers(model, nn.ModuleList(kept))
    for new_idx, layer in enumerate(kept):
        adapter.attention(layer).layer_idx = new_idx
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_idx
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in keep]
    config.num_hidden_layers = len(kept)


def make_identity_layers(model: nn.Module, indices: Iterable[int]) -> None:
    """Zero the residual-stream output maps (weights and biases) of the layers at `indices`, so each returns its
    input unchanged: a model with known answers for pruning and early-exit checks."""
    adapter = get_adapter(model)
    layers = adapter.layers(model)
    with torch.no_grad():
        for i in indices:
            for name in adapter.residual_out_names:
                out = layers[i].get_submodule(name)
                out.weight.zero_()
                if out.bias is not None:
                    out.bias.zero_()


class LayerCallCounter:
    """Forward hooks counting how often each layer module ran (and over how many token positions), keyed by its
    index in the ORIGINAL model."""

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        self.counts: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self._handles = [layer.register_forward_hook(self._hook(i), with_kwargs=True)
                         for i, layer in enumerate(layers)]
        self.num_layers = len(self._handles)

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.counts[index] += 1
            self.tokens[index] += hidden.shape[1]
        return hook

    def snapshot(self) -> list[int]:
        return [self.counts[i] for i in range(self.num_layers)]

    def token_snapshot(self) -> list[int]:
        return [self.tokens[i] for i in range(self.num_layers)]

    def reset(self) -> None:
        self.counts.clear()
        self.tokens.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
