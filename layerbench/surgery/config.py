"""PruneModel configuration and the checks that need no model (the CLI runs them before loading one)."""
from __future__ import annotations

from dataclasses import dataclass, field

from layerbench.errors import UsageError

METHODS = ("base", "angular", "random", "lowrank", "gated")
LOWRANK_METHODS = ("svd", "asvd")
STAND_INS = ("none", "linear")


@dataclass
class PruneConfig:
    method: str = "base"
    prune_n: int | None = None
    dropout_threshold: float | None = None
    prune_seed: int = 42
    protected_layers: list[int] = field(default_factory=list)
    calibration_samples: int = 32
    calibration_max_length: int = 512
    compression_rank: int | None = None
    compression_ratio: float | None = None
    lowrank_method: str = "svd"
    hot_path: list[int] | None = None  # default: first two and last layer
    skip_threshold: float = 0.1
    available_compute: float = 1.0
    stand_in: str = "none"  # angular/random: "linear" fits a map in place of each removed run of layers
    # keep dense originals of factorized matrices so adjust_compression_level can re-factorize (Python API);
    # the benchmark releases them so that it holds only what the compressed model needs
    keep_originals: bool = True


def validate_config(cfg: PruneConfig) -> None:
    """Checks that need no model; depth-dependent checks happen in the methods."""
    if cfg.method not in METHODS:
        raise UsageError(f"--prune_method {cfg.method!r} unknown; choose from {', '.join(METHODS)}")
    if cfg.method == "angular" and (cfg.prune_n is None or cfg.prune_n < 1):
        raise UsageError(f"--prune_n must be >= 1 for --prune_method angular, got {cfg.prune_n}")
    if cfg.method == "random" and (cfg.dropout_threshold is None or not 0 <= cfg.dropout_threshold < 1):
        raise UsageError(f"--dropout_threshold must be in [0, 1) for --prune_method random, got {cfg.dropout_threshold}")
    if cfg.method == "lowrank" or cfg.compression_rank is not None or cfg.compression_ratio is not None:
        check_lowrank_values(cfg.compression_rank, cfg.compression_ratio, cfg.lowrank_method)
    check_gate_values(cfg.skip_threshold, cfg.available_compute)
    if cfg.calibration_samples < 1 or cfg.calibration_max_length < 2:
        raise UsageError("--calibration_samples must be >= 1 and --calibration_max_length >= 2")


def check_lowrank_values(rank: int | None, ratio: float | None, method: str) -> None:
    if rank is None and ratio is None:
        raise UsageError("--prune_method lowrank needs --compression_rank or --compression_ratio")
    if rank is not None and rank < 1:
        raise UsageError(f"--compression_rank must be >= 1, got {rank}")
    if ratio is not None and not 0 < ratio <= 1:
        raise UsageError(f"--compression_ratio must be in (0, 1], got {ratio}")
    if method not in LOWRANK_METHODS:
        raise UsageError(f"--lowrank_method must be svd or asvd, got {method!r}")


def check_gate_values(threshold: float, compute: float) -> None:
    if not 0 <= threshold <= 1:
        raise UsageError(f"--skip_threshold must be in [0, 1], got {threshold}")
    if not 0 < compute <= 1:
        raise UsageError(f"--available_compute must be in (0, 1], got {compute}")
