"""lm-eval results (the run JSON's `lm_eval` section) as table columns, with the change against the matching base
run. A column is one task metric under one setting, `task[k=<few-shot>,n=<documents>]/metric`, so runs are only
compared when they scored the same documents with the same few-shot count. The change's stderr combines the two
runs' lm-eval stderrs as independent, sqrt(se^2 + se_base^2) (lm-eval reports no per-document values to pair).
"""
from __future__ import annotations

import math
from typing import Callable

import pandas as pd
from tabulate import tabulate

PREFIX = "lm_eval:"
STDERR, CHANGE, CHANGE_STDERR = "_stderr", "_change", "_change_stderr"


def columns_of(doc: dict) -> dict:
    """{`lm_eval:task[k=..,n=..]/metric`: value, ..._stderr: stderr} from one run JSON."""
    out = {}
    for task, entry in (doc.get("lm_eval") or {}).items():
        setting = f"{task}[k={entry.get('num_fewshot')},n={entry.get('samples')}]"
        for metric, value in entry.get("metrics", {}).items():
            out[f"{PREFIX}{setting}/{metric}"] = value.get("value")
            out[f"{PREFIX}{setting}/{metric}{STDERR}"] = value.get("stderr")
    return out


def value_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith(PREFIX) and not c.endswith((STDERR, CHANGE, "_std")))


def add_changes(table: pd.DataFrame, base_value: Callable[[str], pd.Series]) -> pd.DataFrame:
    """`<column>_change` (value - the matching base run's) and its `_change_stderr` for every lm-eval metric."""
    for col in value_columns(table):
        table[col + CHANGE] = table[col] - base_value(col)
        se = table.get(col + STDERR)
        if se is not None:
            table[col + CHANGE_STDERR] = (se ** 2 + base_value(col + STDERR) ** 2) ** 0.5
    return table


def _number(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _with_stderr(value, stderr, sign: bool = False) -> str:
    text = _number(value)
    if text and sign and value >= 0:
        text = "+" + text
    se = _number(stderr)
    return f"{text} ± {se}" if text and se else text


def render(table: pd.DataFrame, config: list[str], fmt: str) -> str | None:
    """The lm-eval table (one row per configuration, each metric with its stderr and its change vs base), or
    None when no run has lm-eval results."""
    metrics = value_columns(table)
    if not metrics:
        return None
    if fmt in ("csv", "json"):
        cols = config + [c + s for c in metrics for s in ("", STDERR, CHANGE, CHANGE_STDERR) if c + s in table]
        return table[cols].to_csv(index=False) if fmt == "csv" else table[cols].to_json(orient="records", indent=1)
    headers = config + [h for c in metrics for h in (c[len(PREFIX):], "change vs base")]
    rows = [[row[c] for c in config] + [cell for c in metrics for cell in (
        _with_stderr(row.get(c), row.get(c + STDERR)),
        _with_stderr(row.get(c + CHANGE), row.get(c + CHANGE_STDERR), sign=True))] for _, row in table.iterrows()]
    return tabulate(rows, headers=headers, tablefmt={"github": "github", "latex": "latex"}[fmt], disable_numparse=True)
