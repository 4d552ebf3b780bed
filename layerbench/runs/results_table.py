"""The table printed at the end of a benchmark run: each metric with its standard error and 95% bootstrap
interval, and its change against the matching base run(s) in the same output folder (analyze_logs' matching
rule: same model, dataset, strategy, exit layer, speculations and sample count), paired over the shared sample
ids with a paired-bootstrap interval."""
from __future__ import annotations

import os

from tabulate import tabulate

from layerbench.analysis.paired import change, metric_named, pairing, read_records
from layerbench.analysis.tables import BASE_KEY, load_runs, run_row
from layerbench.analysis.uncertainty import NO_CHANGE, BootstrapConfig, Interval
from layerbench.surgery.methods import BASELINE

ROWS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "sentence_bleu", "corpus_bleu", "exact_match", "edit_distance",
        "pass@1", "perplexity", "tokens_per_second", "decode_tokens_per_second", "time_to_first_token",
        "acceptance_rate", "mean_draft_length")
HEADERS = ["metric", "value", "± stderr", "95% interval", "change vs base [95% interval]"]


def base_runs(doc: dict, path: str) -> tuple[list[list[dict]] | None, str]:
    """Per-sample records of every base run in the run's folder that matches it, and a line saying what the
    change column compares with (None: nothing to compare with)."""
    row = run_row(doc)
    if row["approach"] == BASELINE:
        return None, "change vs base: this is a base run"
    folder = os.path.dirname(path) or "."
    runs, _ = load_runs([folder], warn=lambda m: None)
    key = tuple(row[k] for k in BASE_KEY)
    matches = [] if runs.empty else [r for _, r in runs.iterrows()
                                     if r["approach"] == BASELINE and tuple(r[k] for k in BASE_KEY) == key]
    if not matches:
        return None, f"change vs base: no matching base run in {folder}"
    if any(not isinstance(r["samples_path"], str) for r in matches):
        return None, f"change vs base: not paired: a matching base run in {folder} has no samples file"
    return [read_records(r["samples_path"]) for r in matches], f"change vs base: {len(matches)} base run(s) in {folder}"


def _number(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def change_cell(interval: Interval | None, kind: str) -> str:
    if interval is None or interval.value is None:
        return ""
    text = f"x{interval.value:.4g}" if kind == "ratio" else f"{interval.value:+.4g}"
    if interval.low is not None and interval.high is not None:
        text += f" [{interval.low:.3g}, {interval.high:.3g}]" + (" (ns)" if interval.contains(NO_CHANGE[kind]) else "")
    return text


def results_table(doc: dict, path: str, records: list[dict], config: BootstrapConfig) -> str:
    """The end-of-run table, preceded by the line saying what its change column compares with."""
    estimates = doc.get("uncertainty", {}).get("metrics", {})
    bases, about = base_runs(doc, path)
    shared = pairing(bases, [records]) if bases is not None else None
    if shared is not None:
        about += f", {shared.label}"
    rows = []
    for name in ROWS:
        e = estimates.get(name)
        if e is None or not isinstance(doc["metrics"].get(name), (int, float)):
            continue
        low, high = e["ci95"]
        kind = metric_named(name).change
        delta = change(bases, [records], name, shared.shared, config) if shared and shared.paired else None
        rows.append([name, _number(doc["metrics"][name]), _number(e["stderr"]),
                     "" if low is None or high is None else f"[{low:.4g}, {high:.4g}]", change_cell(delta, kind)])
    table = tabulate(rows, HEADERS, tablefmt="github", disable_numparse=True)
    legend = ("(ns): the change's interval contains no change (0, or x1 for tokens/s); intervals: "
              f"{config.method} bootstrap over samples, {config.resamples} resamples, seed {config.seed}")
    return f"{about}\n{table}\n{legend}"
