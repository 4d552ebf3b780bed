"""Angular-distance pruning (Gromov et al. 2024): remove the n consecutive layers whose input and output are
closest, d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi at the last token, averaged over held-out calibration text."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from layerbench.flags import option
from layerbench.surgery.method import Decision, PruneMethod, Target, check_prune_n, prune_n_of


@dataclass
class AngularOptions:
    prune_n: Optional[int] = option(None, "number of consecutive layers to remove")


def angular_distances(states, n: int) -> list[float]:
    """d(l, l+n) for l = 0 .. L-n, from states (L + 1, samples, hidden)."""
    import math

    import torch
    out = []
    for l in range(states.shape[0] - n):
        cos = torch.nn.functional.cosine_similarity(states[l], states[l + n], dim=-1).clamp(-1.0, 1.0)
        out.append(float((torch.arccos(cos) / math.pi).mean()))
    return out


def decide(target: Target) -> Decision:
    from layerbench.surgery.calibration import calibration_engine, last_token_states
    n = prune_n_of(target)
    t0 = time.perf_counter()
    seqs, info = target.calibration_sequences()
    states = target.calibrated("last_token_states", seqs, info, {},
                               lambda: last_token_states(calibration_engine(target.model), seqs))
    distances = angular_distances(states, n)
    best = min(range(len(distances)), key=distances.__getitem__)
    info["seconds"] = time.perf_counter() - t0
    removed = tuple(target.kept_layers[i] for i in range(best, best + n))
    return Decision(remove_layers=removed, report={"prune_n": n, "distances": distances,
                                                   "best_start_layer": removed[0], "best_distance": distances[best],
                                                   "calibration": info})


METHOD = PruneMethod(
    name="angular", summary="remove the n consecutive layers whose input and output are closest in angular "
                            "distance on calibration text (Gromov et al. 2024)",
    decide=decide, options=AngularOptions, validate=check_prune_n("angular"),
    label=lambda p: f"n={p.get('prune_n')}",
    removes_layers=True, calibrates=lambda options: True)
