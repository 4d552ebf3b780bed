"""Structural edits of a decoder stack: really removing layers (not zeroing them), building identity layers for
tests and mechanics checks, and counting parameters and bytes."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from layerbench.models.families import Family, get_family


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (tied or viewed tensors count once)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def keep_layers(model: nn.Module, family: Family, keep: list[int]) -> None:
    """Rebuild the decoder-layer list from the layers at positions `keep` (current indices) and update the config
    (`num_hidden_layers`, `layer_types`) and HF's `layer_idx` attributes so the model stays a valid HF model."""
    layers = family.layers(model)
    kept = [layers[i] for i in keep]
    family.set_layers(model, nn.ModuleList(kept))
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in keep]
    config.num_hidden_layers = len(kept)


def make_identity_layers(model: nn.Module, indices: Iterable[int]) -> None:
    """Zero the residual-stream output maps (weights and biases) of the layers at `indices`, so each returns its
    input unchanged: a model with known answers for pruning and early-exit checks."""
    family = get_family(model)
    layers = family.layers(model)
    with torch.no_grad():
        for i in indices:
            for name in family.residual_out_names:
                out = layers[i].get_submodule(name)
                out.weight.zero_()
                if out.bias is not None:
                    out.bias.zero_()
