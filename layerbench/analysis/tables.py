"""Run logs to tables: reading, grouping by configuration, and comparison with the matching base run.

Reads every run JSON under the given paths (recursively; samples files are not run logs). Corrupt, partial
(`complete: false`) and foreign JSON files are skipped with one warning line each. Runs of the same
configuration are averaged (std when there are several); speedup and quality change are relative to the base
run with the same model, dataset, strategy, exit layer, speculations and sample count. `speedup` compares
tokens/s over whole generations (prefill included); `decode_speedup` compares tokens/s after the first token,
which is what layer removal changes most directly. Where both configurations have samples files, each change is
paired over the shared sample ids with a paired-bootstrap 95% interval (layerbench.analysis.paired); `pairing`
says which, or why a change is the unpaired difference of run values.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Iterable

import pandas as pd
from tabulate import tabulate

from layerbench.analysis import lm_eval_columns
from layerbench.analysis.paired import UNPAIRED, add_paired_changes, contains_no_change, samples_path
from layerbench.analysis.uncertainty import BootstrapConfig
from layerbench.decoding import STRATEGIES
from layerbench.surgery.method import PruneMethod
from layerbench.surgery.methods import BASELINE, PRUNE_METHODS

CONFIG = ["dataset", "model", "strategy", "approach", "param", "exit_layer", "num_speculations", "samples"]
BASE_KEY = ["dataset", "model", "strategy", "exit_layer", "num_speculations", "samples"]
QUALITY = ["rouge1", "rouge2", "rougeL", "corpus_bleu", "exact_match", "perplexity"]
SPEED = ["acceptance_rate", "mean_draft_length", "tokens_per_second", "decode_tokens_per_second", "time_per_token",
         "total_time", "num_parameters"]
# change column -> the run metric it compares (a ratio for speedups, a difference otherwise)
CHANGE_COLUMNS = {"speedup": "tokens_per_second", "decode_speedup": "decode_tokens_per_second",
                  **{f"{q}_change": q for q in QUALITY}}
METRICS_COLUMNS = CONFIG + ["runs"] + QUALITY + ["acceptance_rate"] + [f"{q}_change" for q in QUALITY] + ["pairing"]
METRICS_DISPLAY = CONFIG + ["runs"] + QUALITY + ["acceptance_rate", "rougeL_change", "corpus_bleu_change",
                                                 "perplexity_change", "pairing"]
TIMING_COLUMNS = CONFIG + ["runs", "acceptance_rate", "mean_draft_length", "tokens_per_second",
                            "decode_tokens_per_second", "time_per_token", "total_time", "num_parameters", "speedup",
                            "decode_speedup", "pairing"]
INTERVAL_SUFFIXES = ("_ci_low", "_ci_high")

def _stand_in(p: dict) -> str:
    return f",stand_in={p['stand_in']}" if p.get("stand_in", "none") != "none" else ""


def _exit_adapter(p: dict) -> str:
    return (p.get("exit_adapter", "") + (f",confidence={p['draft_confidence']}" if p.get("draft_confidence") is not None
                                         else "")
            + (f",vocabulary={p['draft_vocabulary']}" if p.get("draft_vocabulary") is not None else ""))


def _method_label(method: PruneMethod) -> Callable[[dict], str]:
    if method.removes_layers:
        return lambda p: method.label(p) + _stand_in(p)
    return method.label


# approach -> how its parameter is written in the tables: each method's own label, and the exit-adapter approach
PARAM_FORMATS: dict[str, Callable[[dict], str]] = {
    **{name: _method_label(method) for name, method in PRUNE_METHODS.items()}, "exit_adapter": _exit_adapter}


def speculative(strategy: str | None) -> bool:
    """Whether a logged strategy drafts and verifies (a strategy this version no longer has: no)."""
    return strategy in STRATEGIES and STRATEGIES[strategy].speculative


def approach_of(args: dict, prune: dict) -> str:
    """The prune method; a base model whose drafts or exits go through an exit adapter, or stop early by
    confidence, is its own approach (so it is compared with the plain base, not mistaken for it)."""
    method = prune.get("method", args.get("prune_method", BASELINE))
    extras = (args.get("exit_adapter", "none") != "none" or args.get("draft_confidence") is not None
              or args.get("draft_vocabulary") is not None)
    return "exit_adapter" if method == BASELINE and extras else method


class Skip(Exception):
    pass


def iter_json_files(paths: Iterable[str]) -> Iterable[str]:
    for path in paths:
        if os.path.isfile(path):
            yield path
            continue
        for root, _, files in os.walk(path):
            for name in sorted(files):
                if name.endswith(".json"):
                    yield os.path.join(root, name)


def read_run(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Skip(f"corrupt ({type(exc).__name__})")
    if not isinstance(doc, dict) or "schema_version" not in doc or "metrics" not in doc or "args" not in doc:
        raise Skip("not a benchmark run log")
    if not doc.get("complete"):
        raise Skip("partial run (complete: false)")
    return doc


def param_values(args: dict, prune: dict) -> dict:
    """The values a parameter label is written from: the prune report's (resolved) values over the flags, except
    where the report holds a fit report (`stand_in`, `exit_adapter`, `draft_vocabulary`) under a flag's name: there
    the flag's value."""
    values = {**args, **prune}
    for key in ("stand_in", "exit_adapter", "draft_vocabulary"):
        if isinstance(values.get(key), dict):
            values[key] = args.get(key)
    return values


def run_row(doc: dict) -> dict:
    args, metrics, prune = doc["args"], doc["metrics"], doc.get("prune", {})
    approach = approach_of(args, prune)
    fmt = PARAM_FORMATS.get(approach, lambda p: "")
    strategy = args.get("generation_strategy")
    row = {
        "dataset": doc["dataset"]["name"],
        "model": doc["model"]["name"].split(" (")[0],
        "strategy": strategy,
        "approach": approach,
        "param": fmt(param_values(args, prune)),
        "exit_layer": args.get("exit_layer", -1),
        "num_speculations": args.get("num_speculations", -1) if speculative(strategy) else -1,
        "samples": doc["dataset"]["num_samples"],
        "num_parameters": doc["model"].get("num_parameters"),
    }
    if doc.get("schema_version") == 1 and "bleu" in metrics:  # v1 logs called corpus BLEU "bleu"
        metrics = {**metrics, "corpus_bleu": metrics["bleu"]}
    for key in QUALITY + SPEED:
        if key in metrics:
            row[key] = metrics[key]
    return {**row, **lm_eval_columns.columns_of(doc)}


def load_runs(paths: list[str], warn=print) -> tuple[pd.DataFrame, int]:
    rows, skipped = [], 0
    for path in iter_json_files(paths):
        try:
            doc = read_run(path)
            rows.append({**run_row(doc), "path": path, "samples_path": samples_path(path, doc)})
        except Skip as why:
            skipped += 1
            warn(f"warning: skipped {path}: {why}")
        except (KeyError, TypeError, AttributeError):
            skipped += 1
            warn(f"warning: skipped {path}: missing fields")
    return pd.DataFrame(rows), skipped


def aggregate(runs: pd.DataFrame, bootstrap: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """One row per configuration: means, `<metric>_std` when a configuration ran more than once, `runs`,
    and speedup / quality change against the matching base configuration (paired where samples allow)."""
    if runs.empty:
        return pd.DataFrame(columns=METRICS_COLUMNS)
    values = [c for c in QUALITY + SPEED if c in runs.columns]
    values += [c for c in runs.columns if c.startswith(lm_eval_columns.PREFIX)]
    for c in values:
        runs[c] = pd.to_numeric(runs[c], errors="coerce")
    grouped = runs.groupby(CONFIG, dropna=False, sort=True)
    table = grouped[values].mean()
    std = grouped[values].std(ddof=1).add_suffix("_std")
    table = table.join(std)
    table["runs"] = grouped.size()
    table = table.reset_index()
    base = table[table["approach"] == BASELINE].set_index(BASE_KEY)
    keys = table[BASE_KEY].apply(tuple, axis=1)

    def base_value(column: str) -> pd.Series:
        """The matching base configuration's value of `column` for every row (NaN where there is none)."""
        return keys.map(lambda k: base[column].get(k, math.nan) if k in base.index else math.nan).astype(float)

    table["speedup"] = table["tokens_per_second"] / base_value("tokens_per_second")
    if "decode_tokens_per_second" in table:
        table["decode_speedup"] = table["decode_tokens_per_second"] / base_value("decode_tokens_per_second")
    for q in QUALITY:
        if q in table:
            table[f"{q}_change"] = table[q] - base_value(q)
    table = lm_eval_columns.add_changes(table, base_value)
    if "samples_path" not in runs:
        return table
    return add_paired_changes(table, runs, CONFIG, BASE_KEY, CHANGE_COLUMNS, bootstrap)


def _finite(value) -> bool:
    return isinstance(value, float) and not math.isnan(value)


def _change_note(row: pd.Series, col: str) -> str:
    """` [low, high]` with ` (ns)` where the interval holds no change, or ` (unpaired)`."""
    low, high = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if _finite(low) and _finite(high):
        return f" [{low:.3g}, {high:.3g}]" + (" (ns)" if contains_no_change(low, high, CHANGE_COLUMNS[col]) else "")
    return " (unpaired)" if str(row.get("pairing", "")).startswith(UNPAIRED) else ""


def _cell(row: pd.Series, col: str, table: pd.DataFrame) -> str:
    value = row.get(col)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}" if col != "num_parameters" else f"{value:,.0f}"
        std = row.get(f"{col}_std")
        if _finite(std) and row.get("runs", 1) > 1:
            text += f" ± {std:.2g}"
        return text + (_change_note(row, col) if col in CHANGE_COLUMNS else "")
    return str(value)


def with_intervals(table: pd.DataFrame, columns: list[str]) -> list[str]:
    """The columns present in the table, each change column followed by its interval bounds."""
    cols = [c for c in columns if c in table.columns]
    return [x for c in cols for x in [c, *(c + s for s in INTERVAL_SUFFIXES if c + s in table.columns)]]


def render(table: pd.DataFrame, columns: list[str], fmt: str) -> str:
    cols = [c for c in columns if c in table.columns]
    if fmt == "json":
        return table[with_intervals(table, cols)].to_json(orient="records", indent=1)
    if fmt == "csv":
        return table[with_intervals(table, cols)].to_csv(index=False)
    rows = [[_cell(r, c, table) for c in cols] for _, r in table.iterrows()]
    return tabulate(rows, headers=cols, tablefmt={"github": "github", "latex": "latex"}[fmt])


def write_csvs(table: pd.DataFrame, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, columns in (("summary_metrics.csv", METRICS_COLUMNS), ("summary_timing.csv", TIMING_COLUMNS)):
        cols = with_intervals(table, columns)
        extra = [f"{c}_std" for c in cols if f"{c}_std" in table.columns]
        path = os.path.join(out_dir, name)
        table[cols + extra].to_csv(path, index=False)
        paths.append(path)
    return paths
