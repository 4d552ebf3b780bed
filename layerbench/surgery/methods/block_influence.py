"""Block-influence pruning (ShortGPT, Men et al. 2024): a layer that barely turns its input matters little.
BI_i = 1 - E[cos(x_i, x_{i+1})], the mean over every token of the calibration text of the cosine between the
hidden state entering layer i and the one leaving it; remove the n layers with the lowest BI, consecutive or not.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.surgery.method import Decision, PruneMethod, Target, check_prune_n, prune_n_of


@dataclass
class BlockInfluenceOptions:
    prune_n: Optional[int] = option(None, "number of layers to remove")


def block_influence(model, sequences: list[list[int]]) -> list[float]:
    """BI of each decoder layer of `model` over every token of `sequences`, through the engine's forward."""
    import torch

    from layerbench.surgery.calibration import calibration_engine, run_calibration
    engine = calibration_engine(model)
    index = {id(block): i for i, block in enumerate(engine.blocks)}
    cosine_sums = torch.zeros(len(engine.blocks), dtype=torch.float64)
    tokens = [0]

    def observe(block, before, after, phase) -> None:
        i = index[id(block)]
        cos = torch.nn.functional.cosine_similarity(before[0].float(), after[0].float(), dim=-1)  # (T,)
        cosine_sums[i] += float(cos.sum())
        if i == 0:
            tokens[0] += before.shape[1]

    run_calibration(engine, sequences, observe, desc="block-influence calibration")
    return (1 - cosine_sums / tokens[0]).tolist()


def decide(target: Target) -> Decision:
    n = prune_n_of(target)
    t0 = time.perf_counter()
    seqs, info = target.calibration_sequences()
    scores = target.calibrated("block_influence", seqs, info, {}, lambda: block_influence(target.model, seqs))
    if len(scores) != target.num_decoder_layers:
        raise UsageError("--prune_method block_influence runs on a model without stand-ins")
    lowest = sorted(sorted(range(len(scores)), key=scores.__getitem__)[:n])
    info["seconds"] = time.perf_counter() - t0
    removed = tuple(target.kept_layers[i] for i in lowest)
    return Decision(remove_layers=removed, report={"prune_n": n, "block_influence": scores, "calibration": info})


METHOD = PruneMethod(
    name="block_influence", summary="remove the n layers with the lowest block influence, 1 - mean cos(input, "
                                    "output) over calibration tokens (ShortGPT, Men et al. 2024)",
    decide=decide, options=BlockInfluenceOptions, validate=check_prune_n("block_influence"),
    label=lambda p: f"n={p.get('prune_n')}",
    removes_layers=True, calibrates=lambda options: True)
