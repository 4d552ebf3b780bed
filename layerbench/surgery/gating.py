"""Gated (temperature-based) layer skipping.

During the prefill of a sequence every layer runs and its temperature is measured as the angular distance
arccos(cos(input, output))/pi at the last prompt token. For the decode steps of that sequence a cold layer is
skipped when its temperature is below the threshold, or when it falls outside the compute budget of
ceil(c * L) layers (hot path first, then the hottest). A skipped layer passes the residual through, writes no KV,
and stays skipped for the whole sequence, so the cache stays consistent.

The engine tells the gate which phase each pass is (`LayerPolicy`). Hugging Face's own forward (the seed API's
`model(input_ids)`) goes through `GatedLayer` wrappers instead: there the first forward measures the
temperatures and every later forward skips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from layerbench.engine.engine import PREFILL


def temperature(before: torch.Tensor, after: torch.Tensor) -> float:
    """arccos(cos(input, output)) / pi at the last position."""
    cos = torch.nn.functional.cosine_similarity(before[:, -1].detach().float(), after[:, -1].detach().float(), dim=-1)
    return float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean())


@dataclass
class Gate:
    """Shared state of one model's gated layers, and the engine's layer policy."""

    num_layers: int
    hot: set[int]
    threshold: float
    compute: float = 1.0
    per_sequence: bool = True  # engine: measure temperatures at every prefill; else reuse the last measurement
    temperatures: list[float | None] = field(default_factory=list)
    skip: frozenset[int] = frozenset()
    executed: list[int] = field(default_factory=list)  # layer calls, per layer position
    skipped: list[int] = field(default_factory=list)
    executed_tokens: list[int] = field(default_factory=list)
    skipped_tokens: list[int] = field(default_factory=list)
    decode_executed: int = 0
    decode_skipped: int = 0
    seq_decode_executed: int = 0
    seq_decode_skipped: int = 0
    counting: bool = True  # off while the benchmark scores perplexity, which is not generation
    _measuring: bool = False

    def __post_init__(self) -> None:
        self.temperatures = [None] * self.num_layers
        self.reset_counts()

    def decide(self) -> None:
        """Skip set from measured temperatures: below-threshold cold layers, then the compute budget."""
        budget = max(1, math.ceil(self.compute * self.num_layers))
        cold = [i for i in range(self.num_layers) if i not in self.hot]
        candidates = [i for i in cold if self.temperatures[i] is not None and self.temperatures[i] >= self.threshold]
        run = set(self.hot)
        for i in sorted(candidates, key=lambda i: -self.temperatures[i]):
            if len(run) >= budget:
                break
            run.add(i)
        self.skip = frozenset(i for i in cold if i not in run)

    @property
    def measured(self) -> bool:
        return all(t is not None for t in self.temperatures)

    # ---- engine policy ------------------------------------------------------------------------------------
    def begin(self, phase: str) -> frozenset[int]:
        self._measuring = phase == PREFILL and (self.per_sequence or not self.measured)
        if self._measuring:
            if self.counting:
                self.seq_decode_executed = self.seq_decode_skipped = 0
            return frozenset()
        return self.skip

    def observe(self, block, before: torch.Tensor, after: torch.Tensor, phase: str) -> None:
        i = block.position
        if i is None:
            return
        if self._measuring:
            self.temperatures[i] = temperature(before, after)
        self._count(i, before.shape[1], phase, executed=True)

    def skipped_block(self, block, hidden: torch.Tensor, phase: str) -> None:
        self._count(block.position, hidden.shape[1], phase, executed=False)

    def end(self, phase: str) -> None:
        if self._measuring:
            self.decide()
            self._measuring = False

    def _count(self, i: int, tokens: int, phase: str, executed: bool) -> None:
        if not self.counting:
            return
        (self.executed if executed else self.skipped)[i] += 1
        (self.executed_tokens if executed else self.skipped_tokens)[i] += tokens
        if phase != PREFILL:
            if executed:
                self.decode_executed += 1
                self.seq_decode_executed += 1
            else:
                self.decode_skipped += 1
                self.seq_decode_skipped += 1

    # ---- reporting ----------------------------------------------------------------------------------------
    def reset_counts(self) -> None:
        n = self.num_layers
        self.executed, self.skipped = [0] * n, [0] * n
        self.executed_tokens, self.skipped_tokens = [0] * n, [0] * n
        self.decode_executed = self.decode_skipped = 0
        self.seq_decode_executed = self.seq_decode_skipped = 0

    def sequence_report(self) -> dict:
        """What the decode steps of the current (last) sequence did."""
        calls = self.seq_decode_executed + self.seq_decode_skipped
        return {"temperatures": [round(t, 5) if t is not None else None for t in self.temperatures],
                "decode_layers_run": [i for i in range(self.num_layers) if i not in self.skip],
                "decode_layers_skipped": sorted(self.skip),
                "decode_layer_calls": self.seq_decode_executed,
                "decode_skip_fraction": self.seq_decode_skipped / calls if calls else 0.0}


class GatedLayer(nn.Module):
    """Wraps one HF decoder layer for Hugging Face's own forward: the first forward (no temperatures yet) runs
    every layer and measures; later forwards pass the residual stream through the skipped layers."""

    def __init__(self, layer: nn.Module, index: int, gate: Gate) -> None:
        super().__init__()
        self.wrapped, self.index, self.gate = layer, index, gate
        self.tuple_outputs = False  # what the wrapped layer returns (older HF versions return tuples)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        gate, i = self.gate, self.index
        tokens = hidden_states.shape[1]
        if not gate.measured:
            out = self.wrapped(hidden_states, *args, **kwargs)
            self.tuple_outputs = isinstance(out, tuple)
            gate.temperatures[i] = temperature(hidden_states, out[0] if self.tuple_outputs else out)
            if gate.measured:
                gate.decide()
            gate._count(i, tokens, PREFILL, executed=True)
            return out
        if i in gate.skip:
            gate._count(i, tokens, PREFILL, executed=False)
            return (hidden_states,) if self.tuple_outputs else hidden_states
        gate._count(i, tokens, PREFILL, executed=True)
        return self.wrapped(hidden_states, *args, **kwargs)


def unwrap(layer: nn.Module) -> nn.Module:
    return layer.wrapped if isinstance(layer, GatedLayer) else layer
