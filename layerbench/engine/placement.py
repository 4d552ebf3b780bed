"""Where each part of a model computes: on the device its weights live on.

The plan is read from the modules themselves (or, for planning and tests, from a Hugging Face style device map),
never from accelerate's hooks: a block computes where its weights are, its KV cache lives there too, and the
hidden state moves at each device boundary. The embedding's device is the engine's input and output device:
prompts, token ids and logits live there, so the decoding strategies never see a split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from layerbench.errors import UsageError


def module_device(module: nn.Module, name: str = "") -> torch.device:
    """The device of a module's weights (its first parameter, else its first buffer)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type == "meta":
            raise UsageError(f"the weights of {name or type(module).__name__} are not materialized (offloaded to "
                             f"disk by --device_map/--max_memory?); the engine computes where weights live, so give "
                             f"it a map without 'disk'")
        return tensor.device
    raise UsageError(f"{name or type(module).__name__} holds no weights")


def device_in_map(device_map: Mapping[str, object], name: str) -> torch.device:
    """The device a Hugging Face device map gives the module `name` (the longest matching prefix wins)."""
    best = None
    for prefix, device in device_map.items():
        if prefix == "" or name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        raise UsageError(f"the device map places no module that contains {name!r}")
    value = device_map[best]
    return torch.device(f"cuda:{value}" if isinstance(value, int) else value)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move activations to `device`; asynchronously only where the copy is ordered on a CUDA stream before any
    reader (a copy to the CPU must finish before the CPU reads it)."""
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=device.type == "cuda")


@dataclass(frozen=True)
class Placement:
    """Devices along the forward: embedding, each engine block in order, final norm, LM head."""

    embed: torch.device
    blocks: tuple[torch.device, ...]
    final_norm: torch.device
    head: torch.device

    @classmethod
    def resolve(cls, locate: Callable[[str], torch.device], block_names: Iterable[str], embed_name: str,
                final_norm_name: str, head_name: str) -> Placement:
        return cls(embed=locate(embed_name), blocks=tuple(locate(n) for n in block_names),
                   final_norm=locate(final_norm_name), head=locate(head_name))

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Every device used, in the order the forward first reaches it."""
        return tuple(dict.fromkeys((self.embed, *self.blocks, self.final_norm, self.head)))

    @property
    def split(self) -> bool:
        return len(self.devices) > 1

    def moves(self) -> list[tuple[str, torch.device]]:
        """The points where a full forward moves the hidden state: ("block i" | "final norm" | "head" |
        "output", new device)."""
        points, here = [], self.embed
        for label, device in ([(f"block {i}", d) for i, d in enumerate(self.blocks)]
                              + [("final norm", self.final_norm), ("head", self.head), ("output", self.embed)]):
            if device != here:
                points.append((label, device))
                here = device
        return points

    def describe(self) -> dict:
        """For the run log: each device and the blocks on it, and the move points."""
        return {"devices": [str(d) for d in self.devices],
                "blocks": {str(d): [i for i, b in enumerate(self.blocks) if b == d] for d in self.devices
                           if d in self.blocks},
                "embedding": str(self.embed), "head": str(self.head),
                "moves": [f"{label} -> {device}" for label, device in self.moves()]}
