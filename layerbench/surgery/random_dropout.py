"""Random layer dropout: drop each layer independently with probability p, drawn by a local RNG seeded with
`prune_seed`; protected layers are never dropped and at least one layer remains."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from layerbench.errors import UsageError

if TYPE_CHECKING:
    from layerbench.surgery.prune_model import PruneModel


def prune_random(pm: PruneModel) -> None:
    p = pm.config.dropout_threshold
    protected = set(pm.config.protected_layers or [])
    bad = sorted(i for i in protected if not 0 <= i < pm.num_layers_original)
    if bad:
        raise UsageError(f"--protected_layers {bad} out of range [0, {pm.num_layers_original})")
    rng = random.Random(pm.config.prune_seed)
    draws = [rng.random() for _ in range(pm.num_layers_original)]
    drop = [i for i, u in enumerate(draws) if u < p and i not in protected]
    if len(drop) == pm.num_layers_original:  # at least one layer must remain: keep the one least likely dropped
        drop.remove(max(range(len(draws)), key=draws.__getitem__))
    pm.remove(drop)
    pm.report.update({"dropout_threshold": p, "prune_seed": pm.config.prune_seed,
                      "protected_layers": sorted(protected),
                      "realized_fraction": len(drop) / pm.num_layers_original})
