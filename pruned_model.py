"""PruneModel: applies one pruning method to a loaded model and reports exactly what it did.

Methods (registry `PRUNE_METHODS`):
  base     nothing, no calibration pass
  angular  remove the n consecutive layers whose input and output are closest in angular distance
           (Gromov et al. 2024), measured on held-out calibration text
  random   drop each layer independently with probability p (seeded local RNG)
Removed layers are deleted from the module list: they hold no parameters and run no compute.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from errors import UsageError
from decoding import causal_mask
from layer_surgery import LayerCallCounter, count_parameters, keep_layers
from model_adapter import get_adapter


@dataclass
class PruneConfig:
    method: str = "base"
    prune_n: int | None = None
    dropout_threshold: float | None = None
    prune_seed: int = 42
    protected_layers: list[int] = field(default_factory=list)
    calibration_samples: int = 32
    calibration_max_length: int = 512
    calibration_batch_size: int = 8


@dataclass
class Calibration:
    """Tokenized calibration texts and a description of where they came from (for the log)."""
    token_ids: list[list[int]]
    source: dict


class PruneModel:
    def __init__(self, model: nn.Module, tokenizer, config: PruneConfig,
                 calibration: Callable[[], Calibration] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.adapter = get_adapter(model)
        self._calibration = calibration
        self.original_layers = list(self.adapter.layers(model))
        self.num_layers_original = len(self.original_layers)
        self.num_parameters_original = count_parameters(model)
        self.kept_layers = list(range(self.num_layers_original))  # original indices, in order
        self.report: dict = {"method": config.method}
        self.counter: LayerCallCounter | None = None

    # ---- structure -------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.kept_layers)

    def remove_layers(self, original_indices: list[int]) -> None:
        drop = set(original_indices)
        keep_positions = [pos for pos, orig in enumerate(self.kept_layers) if orig not in drop]
        keep_layers(self.model, self.adapter, keep_positions)
        self.kept_layers = [self.kept_layers[p] for p in keep_positions]

    def map_exit_layer(self, exit_layer: int) -> int:
        """An exit layer E of the original model -> the number of kept layers below it."""
        return sum(1 for orig in self.kept_layers if orig < exit_layer)

    # ---- running -----------------------------------------------------------------------------------------
    def apply(self) -> dict:
        if self.config.method not in PRUNE_METHODS:
            raise UsageError(f"--prune_method {self.config.method!r} unknown; choose from {', '.join(PRUNE_METHODS)}")
        PRUNE_METHODS[self.config.method](self)
        self.report.update({
            "removed_layers": [i for i in range(self.num_layers_original) if i not in set(self.kept_layers)],
            "kept_layers": list(self.kept_layers),
            "num_layers_before": self.num_layers_original,
            "num_layers_after": self.num_layers,
            "num_parameters_before": self.num_parameters_original,
            "num_parameters_after": count_parameters(self.model),
        })
        return self.report

    def start_counting(self) -> None:
        self.counter = LayerCallCounter(self.original_layers)

    def layer_call_counts(self) -> list[int] | None:
        return self.counter.snapshot() if self.counter else None

    def calibration(self) -> Calibration:
        if self._calibration is None:
            raise UsageError(f"--prune_method {self.config.method} needs calibration data")
        return self._calibration()

    def save(self, directory: str) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


# ---- angular distance ---------------------------------------------------------------------------------------

@torch.inference_mode()
def last_token_states(model: nn.Module, batches: list[list[list[int]]]) -> torch.Tensor:
    """Hidden state entering each decoder layer plus the last layer's output (before the final norm), at each
    sample's last real token, in float32: shape (num_layers + 1, num_samples, hidden).

    Batches are right-padded; under the causal mask real tokens never see the padding. Only the last-token vectors are kept."""
    adapter = get_adapter(model)
    layers = adapter.layers(model)
    device = next(model.parameters()).device
    pad = 0
    states = []
    for batch in batches:
        lengths = torch.tensor([len(ids) for ids in batch], device=device)
        width = int(lengths.max())
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=device)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, device=device)
        positions = torch.arange(width, device=device)[None].expand(len(batch), -1)
        hidden = adapter.embed(model, ids, positions)
        extra = adapter.layer_kwargs(model, hidden, positions)
        mask = causal_mask(width, 0, hidden.dtype, device)
        rows = torch.arange(len(batch), device=device)
        picked = [hidden[rows, lengths - 1].float()]
        for layer in layers:
            hidden = adapter.call_layer(layer, hidden, extra, mask, None)
            picked.append(hidden[rows, lengths - 1].float())
        states.append(torch.stack(picked))
    return torch.cat(states, dim=1)


def angular_distances(states: torch.Tensor, n: int) -> list[float]:
    """d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi, averaged over samples, for l = 0 .. L-n."""
    out = []
    for l in range(states.shape[0] - n):
        cos = torch.nn.functional.cosine_similarity(states[l], states[l + n], dim=-1).clamp(-1.0, 1.0)
        out.append(float((torch.arccos(cos) / math.pi).mean()))
    return out


def _calibration_batches(pm: PruneModel) -> tuple[list[list[list[int]]], dict]:
    calib = pm.calibration()
    seqs = [ids[: pm.config.calibration_max_length] for ids in calib.token_ids[: pm.config.calibration_samples]]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise UsageError("calibration data is empty")
    bs = pm.config.calibration_batch_size
    info = dict(calib.source, samples=len(seqs), tokens=sum(len(s) for s in seqs),
                max_length=pm.config.calibration_max_length)
    return [seqs[i: i + bs] for i in range(0, len(seqs), bs)], info


def _angular(pm: PruneModel) -> None:
    n = pm.config.prune_n
    if n is None or not 1 <= n < pm.num_layers:
        raise UsageError(f"--prune_n must satisfy 1 <= n < {pm.num_layers} (model layers), got {n}")
    t0 = time.perf_counter()
    batches, info = _calibration_batches(pm)
    states = last_token_states(pm.model, batches)
    distances = angular_distances(states, n)
    best = min(range(len(distances)), key=distances.__getitem__)
    info["seconds"] = time.perf_counter() - t0
    removed = [pm.kept_layers[i] for i in range(best, best + n)]
    pm.remove_layers(removed)
    pm.report.update({"prune_n": n, "distances": distances, "best_start_layer": removed[0],
                      "best_distance": distances[best], "calibration": info})


# ---- random dropout -------------------------------------------------------------------------------------------

def _random(pm: PruneModel) -> None:
    p = pm.config.dropout_threshold
    if p is None or not 0 <= p < 1:
        raise UsageError(f"--dropout_threshold must be in [0, 1), got {p}")
    protected = set(pm.config.protected_layers or [])
    bad = sorted(i for i in protected if not 0 <= i < pm.num_layers_original)
    if bad:
        raise UsageError(f"--protected_layers {bad} out of range [0, {pm.num_layers_original})")
    rng = random.Random(pm.config.prune_seed)
    draws = [rng.random() for _ in range(pm.num_layers_original)]
    drop = [i for i, u in enumerate(draws) if u < p and i not in protected]
    if len(drop) == pm.num_layers_original:  # at least one layer must remain: keep the one least likely dropped
        drop.remove(max(range(len(draws)), key=draws.__getitem__))
    pm.remove_layers(drop)
    pm.report.update({"dropout_threshold": p, "prune_seed": pm.config.prune_seed,
                      "protected_layers": sorted(protected),
                      "realized_fraction": len(drop) / pm.num_layers_original})


PRUNE_METHODS: dict[str, Callable[[PruneModel], None]] = {
    "base": lambda pm: None,
    "angular": _angular,
    "random": _random,
}
