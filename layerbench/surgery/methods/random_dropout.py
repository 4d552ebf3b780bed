"""Random layer dropout: drop each layer independently with probability p, drawn by a local RNG seeded with
`prune_seed`; protected layers are never dropped and at least one layer remains."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.surgery.method import Decision, PruneMethod, Target

DEFAULT_SEED = 42  # the Python API's; benchmark.py passes --seed


@dataclass
class RandomOptions:
    dropout_threshold: Optional[float] = option(None, "drop probability per layer, in [0, 1)")
    prune_seed: Optional[int] = option(None, "RNG seed (default: --seed)")
    protected_layers: Optional[list[int]] = option(None, "layers never dropped")


def check(config) -> None:
    p = config.dropout_threshold
    if p is None or not 0 <= p < 1:
        raise UsageError(f"--dropout_threshold must be in [0, 1) for --prune_method random, got {p}")


def decide(target: Target) -> Decision:
    c, total = target.config, target.num_layers_original
    protected = set(c.protected_layers or [])
    bad = sorted(i for i in protected if not 0 <= i < total)
    if bad:
        raise UsageError(f"--protected_layers {bad} out of range [0, {total})")
    seed = c.prune_seed if c.prune_seed is not None else DEFAULT_SEED
    rng = random.Random(seed)
    draws = [rng.random() for _ in range(total)]
    drop = [i for i, u in enumerate(draws) if u < c.dropout_threshold and i not in protected]
    if len(drop) == total:  # at least one layer must remain: keep the one least likely dropped
        drop.remove(max(range(len(draws)), key=draws.__getitem__))
    return Decision(remove_layers=tuple(drop), report={
        "dropout_threshold": c.dropout_threshold, "prune_seed": seed, "protected_layers": sorted(protected),
        "realized_fraction": len(drop) / total})


METHOD = PruneMethod(
    name="random", summary="drop each layer independently with probability p (seeded)", decide=decide,
    options=RandomOptions, validate=check,
    label=lambda p: f"p={p.get('dropout_threshold')},seed={p.get('prune_seed')}", removes_layers=True)
