"""Low-rank compression: factorize every targeted linear map of the cold layers (outside the hot path) by
truncated SVD, or by ASVD (columns scaled by their calibration activations first). PruneModel applies the
factorization (`apply_low_rank_factorization`, the seed document's API)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.surgery.method import Decision, PruneMethod, Target

FACTORIZATIONS = ("svd", "asvd")
HOT_PATH_HELP = "layers never compressed or skipped (default: first two and last)"


@dataclass
class LowRankOptions:
    compression_rank: Optional[int] = option(None, "rank r of every factorized matrix (or --compression_ratio)")
    compression_ratio: Optional[float] = option(None, "kept-parameter fraction per matrix, in (0, 1] (or "
                                                      "--compression_rank)")
    lowrank_method: str = option("svd", "factorization (asvd scales columns by activations first)", FACTORIZATIONS)
    hot_path: Optional[list[int]] = option(None, HOT_PATH_HELP)


def check_lowrank_values(rank: int | None, ratio: float | None, method: str) -> None:
    if rank is None and ratio is None:
        raise UsageError("--prune_method lowrank needs --compression_rank or --compression_ratio")
    if rank is not None and ratio is not None:
        raise UsageError("--compression_rank and --compression_ratio are alternatives; give one")
    if rank is not None and rank < 1:
        raise UsageError(f"--compression_rank must be >= 1, got {rank}")
    if ratio is not None and not 0 < ratio <= 1:
        raise UsageError(f"--compression_ratio must be in (0, 1], got {ratio}")
    if method not in FACTORIZATIONS:
        raise UsageError(f"--lowrank_method must be svd or asvd, got {method!r}")


def check(config) -> None:
    check_lowrank_values(config.compression_rank, config.compression_ratio, config.lowrank_method)


def decide(target: Target) -> Decision:
    c = target.config
    return Decision(factorize={"rank": c.compression_rank, "ratio": c.compression_ratio,
                               "method": c.lowrank_method})


def label(p: dict) -> str:
    size = f"r={p['compression_rank']}" if p.get("compression_rank") else f"rho={p.get('compression_ratio')}"
    return f"{size},{p.get('lowrank_method', 'svd')}"


METHOD = PruneMethod(name="lowrank", summary="factorize the linear maps of the cold layers (truncated SVD or "
                                             "activation-aware ASVD)",
                     decide=decide, options=LowRankOptions, validate=check, label=label, saveable=False,
                     calibrates=lambda options: options.lowrank_method == "asvd")
