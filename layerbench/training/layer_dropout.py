"""LayerSkip's layer dropout (Elhoushi et al. 2024, eq. 1-3): at step t of T, layer l of L is skipped with
probability p(l, t) = S(t) · D(l) · p_max, where D(l) = exp(l · ln2 / (L - 1)) - 1 grows from 0 (the first layer is
never skipped) to 1 (the last layer is skipped at p_max), and S(t) is 1 (continual pre-training, fine-tuning) or
exp(t · ln2 / T) - 1 (pre-training from scratch: no dropout at first, p_max by the end).

Each example of the batch draws its own skips, as LayerSkip does: a layer runs only on the rows that keep it
(selected, run, and written back; skipped rows pass through unchanged), so dropped layers also save compute. The
outputs are not rescaled."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn


def depth_factor(layer: int, num_layers: int) -> float:
    """D(l) = exp(l · ln2 / (L - 1)) - 1: 0 for the first layer, 1 for the last (0 in a one-layer model)."""
    if num_layers < 2:
        return 0.0
    return math.exp(layer * math.log(2) / (num_layers - 1)) - 1


def constant(step: int, total_steps: int) -> float:
    return 1.0


def exponential(step: int, total_steps: int) -> float:
    """S(t) = exp(t · ln2 / T) - 1."""
    return math.exp(step * math.log(2) / total_steps) - 1


CURRICULA: dict[str, Callable[[int, int], float]] = {"constant": constant, "exponential": exponential}


def dropout_rates(step: int, total_steps: int, num_layers: int, p_max: float, curriculum: str) -> list[float]:
    """p(l, t) for every layer l at step t."""
    scale = CURRICULA[curriculum](step, total_steps) * p_max
    return [scale * depth_factor(layer, num_layers) for layer in range(num_layers)]


def sample_skips(rates: list[float], batch: int, generator: torch.Generator) -> torch.Tensor:
    """(L, B) booleans: True where example b skips layer l (one Bernoulli draw each, from `generator`)."""
    probabilities = torch.tensor(rates, dtype=torch.float64).unsqueeze(1).expand(len(rates), batch)
    return torch.bernoulli(probabilities, generator=generator).bool()


def _rows(value: Any, keep: torch.Tensor, batch: int) -> Any:
    """`value` cut to the kept rows where it has one row per example (masks, per-example positions); values
    shared by every row (a (1, T) position tensor, rotary tables) pass unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value.index_select(0, keep)
    if isinstance(value, tuple):
        return tuple(_rows(v, keep, batch) for v in value)
    return value


class LayerDropout(nn.Module):
    """A decoder layer that skips the rows its `skip` mask (B,) marks, and hands its output to `record` when set
    (the early-exit loss reads it). Its one child is the layer, so its weights keep their names under `.layer`."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.skip: torch.Tensor | None = None
        self.record: Callable[[torch.Tensor], None] | None = None

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = self._run(hidden_states, *args, **kwargs)
        if self.record is not None:
            self.record(out[0] if isinstance(out, tuple) else out)
        return out

    def _run(self, hidden_states: torch.Tensor, *args, **kwargs):
        skip = self.skip
        if skip is None or not bool(skip.any()):
            return self.layer(hidden_states, *args, **kwargs)
        if bool(skip.all()):
            return hidden_states
        batch = hidden_states.shape[0]
        keep = (~skip).nonzero().squeeze(1).to(hidden_states.device)
        out = self.layer(hidden_states.index_select(0, keep), *_rows(args, keep, batch),
                         **{k: _rows(v, keep, batch) for k, v in kwargs.items()})
        kept = out[0] if isinstance(out, tuple) else out
        merged = hidden_states.index_copy(0, keep, kept)
        return (merged, *out[1:]) if isinstance(out, tuple) else merged
