"""Sampling uncertainty over samples: standard errors and percentile-bootstrap intervals (scipy.stats.bootstrap)
for one run's metric, and for the paired change between two runs scored on the same sample ids.

A statistic is computed from per-sample component columns: it receives their sums over the (re)sampled samples
and the sample count, so a ratio metric (perplexity, tokens/s, corpus BLEU) is recomputed as a ratio of sums on
every resample, never averaged over per-sample ratios.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

# (sums over samples with shape (..., k), sample count) -> statistic with shape (...)
Statistic = Callable[[np.ndarray, int], np.ndarray]

# how a run is compared with its base run
CHANGES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "difference": np.subtract,  # new - base; 0 means no change
    "ratio": np.divide,  # new / base; 1 means no change
}
NO_CHANGE = {"difference": 0.0, "ratio": 1.0}


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    method: str = "percentile"

    def describe(self) -> dict:
        return {"method": f"{self.method} bootstrap over samples (scipy.stats.bootstrap); ratio metrics are "
                          "recomputed from summed components on every resample",
                "confidence_level": self.confidence, "resamples": self.resamples, "seed": self.seed}


@dataclass(frozen=True)
class Interval:
    """A statistic over n samples with its standard error and confidence interval (None where undefined)."""
    value: float | None
    stderr: float | None
    low: float | None
    high: float | None
    n: int
    stderr_method: str  # analytic (plain means and their differences) or bootstrap

    def contains(self, x: float) -> bool | None:
        return None if self.low is None or self.high is None else self.low <= x <= self.high

    def as_dict(self) -> dict:
        return {"value": self.value, "stderr": self.stderr, "ci95": [self.low, self.high], "n": self.n,
                "stderr_method": self.stderr_method}


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap(columns: np.ndarray, statistic: Statistic, config: BootstrapConfig) -> tuple[float | None, ...]:
    """(low, high, standard error) of `statistic` over the rows of `columns` (n samples x k components),
    resampling whole rows; None for each when there are fewer than two samples."""
    n = len(columns)
    if n < 2:
        return None, None, None

    def resampled(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        sums = np.stack([c.sum(axis=axis) for c in cols], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return statistic(sums, n)

    res = stats.bootstrap(tuple(columns.T), resampled, n_resamples=config.resamples, paired=True, vectorized=True,
                          confidence_level=config.confidence, method=config.method,
                          rng=np.random.default_rng(config.seed))
    ci = res.confidence_interval
    return _finite(ci.low), _finite(ci.high), _finite(res.standard_error)


def _value(columns: np.ndarray, statistic: Statistic) -> float | None:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite(statistic(columns.sum(axis=0), len(columns))) if len(columns) else None


def _mean_stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def _matrix(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=float)
    return rows.reshape(len(rows), -1) if rows.size else np.zeros((len(rows), 0))


def estimate(columns: np.ndarray, statistic: Statistic, config: BootstrapConfig, is_mean: bool = False) -> Interval:
    """One run's statistic with its interval. `is_mean`: the statistic is the plain mean of the single column,
    whose standard error is the analytic std / sqrt(n); otherwise the bootstrap's."""
    columns = _matrix(columns)
    low, high, se = bootstrap(columns, statistic, config)
    if is_mean and len(columns) >= 2:
        se = _mean_stderr(columns[:, 0])
    return Interval(_value(columns, statistic), se, low, high, len(columns), "analytic" if is_mean else "bootstrap")


def paired_change(base: np.ndarray, new: np.ndarray, statistic: Statistic, change: str, config: BootstrapConfig,
                  is_mean: bool = False) -> Interval:
    """The change of `statistic` from base to new (rows: the same sample ids, in the same order), with a paired
    bootstrap interval: each resample draws sample ids and takes both runs' rows for them."""
    base, new = _matrix(base), _matrix(new)
    if base.shape != new.shape:
        raise ValueError(f"paired columns differ in shape: {base.shape} vs {new.shape}")
    k, combine = base.shape[1], CHANGES[change]

    def contrast(sums: np.ndarray, n: int) -> np.ndarray:
        return combine(statistic(sums[..., k:], n), statistic(sums[..., :k], n))

    columns = np.hstack([base, new])
    low, high, se = bootstrap(columns, contrast, config)
    analytic = is_mean and change == "difference"
    if analytic and len(columns) >= 2:
        se = _mean_stderr(new[:, 0] - base[:, 0])
    return Interval(_value(columns, contrast), se, low, high, len(columns), "analytic" if analytic else "bootstrap")
