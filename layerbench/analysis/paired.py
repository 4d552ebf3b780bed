"""Paired changes against the base run over the sample ids both scored. Per-sample records come from the samples
file beside each run JSON; repeated runs of one configuration are pooled (each sample id's components averaged
over the runs that scored it). Each change gets a paired-bootstrap interval: a resample draws sample ids and
takes both configurations' values for them. Runs without a samples file, or with fewer than two shared sample
ids, are not paired and say why."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from layerbench.analysis.metric_components import FIXED_METRICS, RunMetric, columns, mean_of
from layerbench.analysis.uncertainty import NO_CHANGE, BootstrapConfig, Interval, paired_change
from layerbench.runs.run_log import read_samples
from layerbench.surgery.methods import BASELINE

UNPAIRED = "unpaired"


def samples_path(json_path: str, doc: dict) -> str | None:
    """The run's samples file (named in the run JSON, beside it), if it exists."""
    name = doc.get("samples_file")
    path = os.path.join(os.path.dirname(json_path), name) if isinstance(name, str) else None
    return path if path and os.path.isfile(path) else None


def read_records(path: str) -> list[dict]:
    """Per-sample records (a torn last line ends the file), those that name their sample."""
    return [r for r in read_samples(path) if isinstance(r, dict) and "sample_id" in r]


def metric_named(name: str) -> RunMetric:
    """A fixed run metric, else the mean of the per-sample quality metric of that name."""
    return FIXED_METRICS.get(name) or mean_of(lambda r: r.get("metrics", {}).get(name))


def pooled(runs: list[list[dict]], metric: RunMetric) -> dict[str, np.ndarray]:
    """sample id -> its components averaged over the runs that have a value for it."""
    by_id: dict[str, list[np.ndarray]] = {}
    for records in runs:
        for sample_id, c in columns(metric, records).items():
            by_id.setdefault(sample_id, []).append(c)
    return {k: np.mean(v, axis=0) for k, v in by_id.items()}


@dataclass(frozen=True)
class Pairing:
    shared: list[str]  # sample ids both configurations scored, in a fixed order
    label: str  # "paired: N ids", or "unpaired: <why>"

    @property
    def paired(self) -> bool:
        return not self.label.startswith(UNPAIRED)


def pairing(base_runs: list[list[dict]] | None, new_runs: list[list[dict]] | None) -> Pairing:
    """Which sample ids a change is computed over (None: a run of that side has no samples file)."""
    if base_runs is None or new_runs is None:
        return Pairing([], f"{UNPAIRED}: no samples file")
    base_ids = {r["sample_id"] for records in base_runs for r in records}
    new_ids = [r["sample_id"] for records in new_runs for r in records]
    shared = sorted(base_ids.intersection(new_ids))
    if len(shared) < 2:
        return Pairing(shared, f"{UNPAIRED}: {len(shared)} shared sample ids")
    return Pairing(shared, f"paired: {len(shared)} ids")


def change(base_runs: list[list[dict]], new_runs: list[list[dict]], name: str, ids: list[str],
           config: BootstrapConfig) -> Interval | None:
    """The paired change of metric `name` over `ids` (those of them both sides have a value for)."""
    metric = metric_named(name)
    base, new = pooled(base_runs, metric), pooled(new_runs, metric)
    ids = [k for k in ids if k in base and k in new]
    if len(ids) < 2:
        return None
    return paired_change([base[k] for k in ids], [new[k] for k in ids], metric.statistic, metric.change, config,
                         metric.is_mean)


def contains_no_change(interval_low: float, interval_high: float, name: str) -> bool:
    return interval_low <= NO_CHANGE[metric_named(name).change] <= interval_high


def _runs_of(paths: list[str | None], cache: dict[str, list[dict]]) -> list[list[dict]] | None:
    if any(not isinstance(p, str) for p in paths):
        return None
    for p in paths:
        if p not in cache:
            cache[p] = read_records(p)
    return [cache[p] for p in paths]


def add_paired_changes(table: pd.DataFrame, runs: pd.DataFrame, keys: list[str], base_keys: list[str],
                       change_columns: dict[str, str], config: BootstrapConfig) -> pd.DataFrame:
    """For every non-base row with a base configuration: the `pairing` label and, where paired, each change
    column (column -> metric) recomputed over the shared ids with `<column>_ci_low` / `_ci_high`."""
    paths: dict[tuple, list] = {}
    for _, r in runs.iterrows():
        paths.setdefault(tuple(r[keys]), []).append(r.get("samples_path"))
    bases = {tuple(r[base_keys]): tuple(r[keys]) for _, r in table.iterrows() if r["approach"] == BASELINE}
    cache: dict[str, list[dict]] = {}
    table = table.copy()
    table["pairing"] = ""
    for column in change_columns:
        table[f"{column}_ci_low"] = math.nan
        table[f"{column}_ci_high"] = math.nan
    for i, r in table.iterrows():
        base_key = bases.get(tuple(r[base_keys]))
        if r["approach"] == BASELINE:
            continue
        if base_key is None:
            table.at[i, "pairing"] = "no base run"
            continue
        base_runs, new_runs = _runs_of(paths[base_key], cache), _runs_of(paths[tuple(r[keys])], cache)
        p = pairing(base_runs, new_runs)
        table.at[i, "pairing"] = p.label
        if not p.paired:
            continue
        for column, name in change_columns.items():
            interval = change(base_runs, new_runs, name, p.shared, config)
            if interval is not None and interval.value is not None:
                table.at[i, column] = interval.value
                table.at[i, f"{column}_ci_low"] = math.nan if interval.low is None else interval.low
                table.at[i, f"{column}_ci_high"] = math.nan if interval.high is None else interval.high
    return table


def legend(config: BootstrapConfig) -> str:
    return (f"Changes vs base: [95% interval] from a paired bootstrap over the sample ids both runs scored "
            f"({config.resamples} resamples, seed {config.seed}); (ns): the interval contains no change (0, or 1 for "
            "speedups); (unpaired): a run has no samples file or too few shared sample ids, so the change is the "
            "difference (ratio) of run values, without an interval.")
