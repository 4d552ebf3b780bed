"""LayerSkip's early-exit loss (Elhoushi et al. 2024, eq. 4-7): cross-entropy at exits through the model's own final
norm and shared LM head, weighted per exit and summed with the last layer's loss.

Exit E means the hidden state after layers [0, E) (as `--exit_layer`; the paper's layer l = E - 1). Unnormalized
weights grow with depth: e~(E) = e_scale · sum_{i=0}^{E-1} i for E < L, and e~(L) = (L - 1) + e_scale ·
sum_{i=0}^{L-2} i for the last layer. A curriculum C(t, E) chooses the exits active at step t; the weights are
normalized over the active ones, e(t, E) = C(t, E) e~(E) / sum_i C(t, i) e~(i), and the last layer is always active.
Curricula: `none` (every exit), `rotational` (every R-th exit, the choice rotating each step) and `gradual` (exits
enabled from the last layer down, all of them by the end)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a token the loss does not count


def exit_weight(exit_layer: int, num_layers: int, scale: float) -> float:
    """e~(E), unnormalized."""
    if exit_layer == num_layers:
        return (num_layers - 1) + scale * (num_layers - 2) * (num_layers - 1) / 2
    return scale * (exit_layer - 1) * exit_layer / 2


def every_exit(step: int, total_steps: int, candidates: list[int], rotation: int) -> list[int]:
    return list(candidates)


def rotational(step: int, total_steps: int, candidates: list[int], rotation: int) -> list[int]:
    """Every R-th candidate, starting at the (t mod R)-th."""
    return [e for i, e in enumerate(candidates) if i % rotation == step % rotation]


def gradual(step: int, total_steps: int, candidates: list[int], rotation: int) -> list[int]:
    """The deepest ceil((t + 1) / T · n) of the n candidates."""
    enabled = math.ceil((step + 1) / total_steps * len(candidates))
    return sorted(candidates)[len(candidates) - enabled:]


CURRICULA: dict[str, Callable[[int, int, list[int], int], list[int]]] = {
    "none": every_exit, "rotational": rotational, "gradual": gradual}


def active_exits(step: int, total_steps: int, candidates: list[int], curriculum: str, rotation: int,
                 num_layers: int) -> list[int]:
    """The exits whose loss counts at step t, the last layer L included."""
    early = CURRICULA[curriculum](step, total_steps, sorted(set(candidates)), rotation)
    return sorted(set(early) | {num_layers})


def normalized_weights(exits: list[int], num_layers: int, scale: float) -> dict[int, float]:
    """e(t, E) over the active exits (which include L); exits of weight 0 (E = 1) are left out."""
    raw = {e: exit_weight(e, num_layers, scale) for e in exits}
    total = sum(raw.values())
    if total == 0:  # a one-layer model: its only exit is the last layer
        return {num_layers: 1.0}
    return {e: w / total for e, w in raw.items() if w > 0}


def token_cross_entropy(logits_of: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the counted tokens: hidden (B, T, d) at position i predicts labels[i + 1];
    the head runs only on the positions that count."""
    targets = labels[:, 1:]
    counted = targets != IGNORE
    logits = logits_of(hidden[:, :-1][counted])
    return F.cross_entropy(logits.float(), targets[counted])


def early_exit_loss(logits_at: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
                    hidden_by_exit: dict[int, torch.Tensor], labels: torch.Tensor,
                    weights: dict[int, float]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(sum over exits of e(t, E) · CE(E), each exit's CE) for the exits in `weights`; `logits_at(E)` maps hidden
    states at exit E to logits."""
    losses = {e: token_cross_entropy(logits_at(e), hidden_by_exit[e], labels) for e in sorted(weights)}
    return sum(weights[e] * losses[e] for e in losses), losses
