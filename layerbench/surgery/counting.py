"""Counting how often each layer of the ORIGINAL model ran, and over how many token positions.

The engine reports every block it runs, replayed CUDA-graph steps included (the counter is one of its block
counters); Hugging Face's own forward (the
seed API's `model(input_ids)`) is counted by forward hooks on the same layer modules. The two never overlap:
the engine does not call layer modules.
"""
from __future__ import annotations

from collections import Counter

from torch import nn


class LayerCallCounter:
    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.counts: Counter[int] = Counter()
        self.tokens: Counter[int] = Counter()
        self._origin: dict[int, int] = {}  # id(layer module) -> original index
        self._handles: list = []
        self.paused = False

    def track(self, layers: dict[int, nn.Module]) -> None:
        """Count the given modules (original index -> module) from now on, and nothing else."""
        for h in self._handles:
            h.remove()
        self._origin = {id(m): i for i, m in layers.items()}
        self._handles = [m.register_forward_hook(self._hook(i), with_kwargs=True) for i, m in layers.items()]

    def _hook(self, index: int):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            self._add(index, hidden.shape[1])
        return hook

    def _add(self, index: int, tokens: int) -> None:
        if self.paused:
            return
        self.counts[index] += 1
        self.tokens[index] += tokens

    def __call__(self, block, tokens: int, phase: str) -> None:
        """Engine block counter."""
        index = self._origin.get(id(block.module))
        if index is not None:
            self._add(index, tokens)

    def snapshot(self) -> list[int]:
        return [self.counts[i] for i in range(self.num_layers)]

    def token_snapshot(self) -> list[int]:
        return [self.tokens[i] for i in range(self.num_layers)]

    def reset(self) -> None:
        self.counts.clear()
        self.tokens.clear()
