"""Angular-distance pruning (Gromov et al. 2024): remove the n consecutive layers whose input and output are
closest, d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi at the last token, averaged over held-out calibration text."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from layerbench.errors import UsageError
from layerbench.surgery.calibration import calibration_engine, last_token_states

if TYPE_CHECKING:
    from layerbench.surgery.prune_model import PruneModel


def angular_distances(states: torch.Tensor, n: int) -> list[float]:
    """d(l, l+n) for l = 0 .. L-n, from states (L + 1, samples, hidden)."""
    out = []
    for l in range(states.shape[0] - n):
        cos = torch.nn.functional.cosine_similarity(states[l], states[l + n], dim=-1).clamp(-1.0, 1.0)
        out.append(float((torch.arccos(cos) / math.pi).mean()))
    return out


def prune_angular(pm: PruneModel) -> None:
    n = pm.config.prune_n
    if n is None or not 1 <= n < pm.num_layers:
        raise UsageError(f"--prune_n must satisfy 1 <= n < {pm.num_layers} (model layers), got {n}")
    decided = pm.decided.get("report")
    if decided:
        pm.remove(decided["removed_layers"])
        pm.report.update({k: decided[k] for k in ("prune_n", "distances", "best_start_layer", "best_distance",
                                                  "calibration")})
        return
    t0 = time.perf_counter()
    seqs, info = pm.calibration_sequences()
    states = pm.calibrated("last_token_states", seqs, info, {},
                           lambda: last_token_states(calibration_engine(pm.model), seqs))
    distances = angular_distances(states, n)
    best = min(range(len(distances)), key=distances.__getitem__)
    info["seconds"] = time.perf_counter() - t0
    removed = [pm.kept_layers[i] for i in range(best, best + n)]
    pm.remove(removed)
    pm.report.update({"prune_n": n, "distances": distances, "best_start_layer": removed[0],
                      "best_distance": distances[best], "calibration": info})
