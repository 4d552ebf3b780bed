"""Aggregate benchmark.py run logs into metrics and timing tables (and plots).

    python analyze_logs.py [LOG_DIR_OR_FILE ...] [--format github|latex|csv|json] [--out DIR] [--plot]
        [--dataset NAME] [--model NAME] [--approach NAME] [--sort COLUMN]

Reads every run JSON under the given paths (recursively; samples files are not run logs). Corrupt, partial
(`complete: false`) and foreign JSON files are skipped with one warning line each. Runs of the same
configuration are averaged (std when there are several); speedup and quality change are relative to the base
run with the same model, dataset, strategy, exit layer, speculations and sample count. `speedup` compares
tokens/s over whole generations (prefill included); `decode_speedup` compares tokens/s after the first token,
which is what layer removal changes most directly.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Iterable

import pandas as pd
from tabulate import tabulate

from errors import OneLineArgumentParser

CONFIG = ["dataset", "model", "strategy", "approach", "param", "exit_layer", "num_speculations", "samples"]
BASE_KEY = ["dataset", "model", "strategy", "exit_layer", "num_speculations", "samples"]
QUALITY = ["rouge1", "rouge2", "rougeL", "bleu", "exact_match"]
SPEED = ["acceptance_rate", "tokens_per_second", "decode_tokens_per_second", "time_per_token", "total_time",
         "num_parameters"]
METRICS_COLUMNS = CONFIG + ["runs"] + QUALITY + ["acceptance_rate"] + [f"{q}_change" for q in QUALITY]
METRICS_DISPLAY = CONFIG + ["runs"] + QUALITY + ["acceptance_rate", "rougeL_change", "bleu_change"]
TIMING_COLUMNS = CONFIG + ["runs", "tokens_per_second", "decode_tokens_per_second", "time_per_token", "total_time",
                            "num_parameters", "speedup", "decode_speedup"]

# approach -> how its parameter is written in the tables
PARAM_FORMATS = {
    "base": lambda p: "",
    "angular": lambda p: f"n={p.get('prune_n')}",
    "random": lambda p: f"p={p.get('dropout_threshold')},seed={p.get('prune_seed')}",
    "lowrank": lambda p: (f"r={p['compression_rank']}" if p.get("compression_rank") else f"rho={p.get('compression_ratio')}")
    + f",{p.get('lowrank_method', 'svd')}",
    "gated": lambda p: f"thr={p.get('skip_threshold')},compute={p.get('available_compute')}",
}


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


def run_row(doc: dict) -> dict:
    args, metrics, prune = doc["args"], doc["metrics"], doc.get("prune", {})
    approach = prune.get("method", args.get("prune_method", "base"))
    fmt = PARAM_FORMATS.get(approach, lambda p: "")
    strategy = args.get("generation_strategy")
    row = {
        "dataset": doc["dataset"]["name"],
        "model": doc["model"]["name"].split(" (")[0],
        "strategy": strategy,
        "approach": approach,
        "param": fmt({**args, **prune}),
        "exit_layer": args.get("exit_layer", -1),
        "num_speculations": args.get("num_speculations", -1) if strategy == "self_speculative" else -1,
        "samples": doc["dataset"]["num_samples"],
        "num_parameters": doc["model"].get("num_parameters"),
    }
    for key in QUALITY + SPEED:
        if key in metrics:
            row[key] = metrics[key]
    return row


def load_runs(paths: list[str], warn=print) -> tuple[pd.DataFrame, int]:
    rows, skipped = [], 0
    for path in iter_json_files(paths):
        try:
            rows.append(run_row(read_run(path)))
        except Skip as why:
            skipped += 1
            warn(f"warning: skipped {path}: {why}")
        except (KeyError, TypeError, AttributeError):
            skipped += 1
            warn(f"warning: skipped {path}: missing fields")
    return pd.DataFrame(rows), skipped


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: means, `<metric>_std` when a configuration ran more than once, `runs`,
    and speedup / quality change against the matching base configuration."""
    if runs.empty:
        return pd.DataFrame(columns=METRICS_COLUMNS)
    values = [c for c in QUALITY + SPEED if c in runs.columns]
    for c in values:
        runs[c] = pd.to_numeric(runs[c], errors="coerce")
    grouped = runs.groupby(CONFIG, dropna=False, sort=True)
    table = grouped[values].mean()
    std = grouped[values].std(ddof=1).add_suffix("_std")
    table = table.join(std)
    table["runs"] = grouped.size()
    table = table.reset_index()
    base = table[table["approach"] == "base"].set_index(BASE_KEY)
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
    return table


def _cell(row: pd.Series, col: str, table: pd.DataFrame) -> str:
    value = row.get(col)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}" if col != "num_parameters" else f"{value:,.0f}"
        std = row.get(f"{col}_std")
        if std is not None and isinstance(std, float) and not math.isnan(std) and row.get("runs", 1) > 1:
            text += f" ± {std:.2g}"
        return text
    return str(value)


def render(table: pd.DataFrame, columns: list[str], fmt: str) -> str:
    cols = [c for c in columns if c in table.columns]
    if fmt == "json":
        return table[cols].to_json(orient="records", indent=1)
    if fmt == "csv":
        return table[cols].to_csv(index=False)
    rows = [[_cell(r, c, table) for c in cols] for _, r in table.iterrows()]
    return tabulate(rows, headers=cols, tablefmt={"github": "github", "latex": "latex"}[fmt])


def write_csvs(table: pd.DataFrame, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, columns in (("summary_metrics.csv", METRICS_COLUMNS), ("summary_timing.csv", TIMING_COLUMNS)):
        cols = [c for c in columns if c in table.columns]
        extra = [f"{c}_std" for c in cols if f"{c}_std" in table.columns]
        path = os.path.join(out_dir, name)
        table[cols + extra].to_csv(path, index=False)
        paths.append(path)
    return paths


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (x up, y up)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot(table: pd.DataFrame, out_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset, part in table.groupby("dataset"):
        part = part.dropna(subset=["tokens_per_second", "rougeL"])
        if part.empty:
            continue
        fig, ax = plt.subplots(figsize=(8, 5.5))
        pts = list(zip(part["tokens_per_second"], part["rougeL"]))
        short = {"autoregressive": "AR", "self_speculative": "SS"}
        labels = [f"{r.approach} {r.param} {short.get(r.strategy, r.strategy)}"
                  + (f" E={r.exit_layer}" if r.exit_layer > 0 else "") for r in part.itertuples()]
        for approach, sub in part.groupby("approach"):
            ax.scatter(sub["tokens_per_second"], sub["rougeL"], label=approach, s=40)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, marker="o", ms=11,
                mfc="none", label="Pareto front")
        for k, ((x, y), label) in enumerate(zip(pts, labels)):
            # alternate label offsets so neighbouring points stay readable
            ax.annotate(label, (x, y), fontsize=7, xytext=(5, 5 if k % 2 == 0 else -10), textcoords="offset points")
        ax.set_xlabel("tokens / second")
        ax.set_ylabel("ROUGE-L (F1)")
        ax.set_title(f"{dataset}: quality vs speed")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"quality_vs_speed_{dataset}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    sub = table.dropna(subset=["speedup"])
    if not sub.empty:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        labels = [f"{r.dataset}\n{r.approach} {r.param}\n{r.strategy}" for r in sub.itertuples()]
        colors = ["tab:gray" if a == "base" else "tab:blue" for a in sub["approach"]]
        ax.bar(range(len(sub)), sub["speedup"], color=colors)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(sub)), labels, fontsize=6, rotation=45, ha="right")
        ax.set_ylabel("speedup vs base (tokens/s)")
        ax.set_title("Speedup per approach")
        fig.tight_layout()
        path = os.path.join(out_dir, "speedup.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = OneLineArgumentParser(description="Aggregate benchmark.py logs into tables.")
    ap.add_argument("paths", nargs="*", default=["logs"])
    ap.add_argument("--format", choices=["github", "latex", "csv", "json"], default="github")
    ap.add_argument("--out", default=None, help="where summary CSVs and plots go (default: the first log dir)")
    ap.add_argument("--dataset", action="append")
    ap.add_argument("--model", action="append")
    ap.add_argument("--approach", action="append")
    ap.add_argument("--sort", default=None, help="column to sort by")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args(argv)
    for p in args.paths:
        if not os.path.exists(p):
            print(f"error: {p}: no such file or directory", file=sys.stderr)
            return 2
    runs, skipped = load_runs(args.paths, warn=lambda m: print(m, file=sys.stderr))
    for col, wanted in (("dataset", args.dataset), ("model", args.model), ("approach", args.approach)):
        if wanted and not runs.empty:
            runs = runs[runs[col].isin(wanted)]
    table = aggregate(runs)
    if args.sort:
        if args.sort not in table.columns:
            print(f"error: --sort {args.sort}: no such column; columns: {', '.join(table.columns)}", file=sys.stderr)
            return 2
        table = table.sort_values(args.sort, kind="stable").reset_index(drop=True)
    out_dir = args.out or (args.paths[0] if os.path.isdir(args.paths[0]) else os.path.dirname(args.paths[0]) or ".")
    print("## Metrics\n")
    print(render(table, METRICS_DISPLAY if args.format in ("github", "latex") else METRICS_COLUMNS, args.format))
    print("\n## Timing\n")
    print(render(table, TIMING_COLUMNS, args.format))
    written = write_csvs(table, out_dir)
    if args.plot:
        written += plot(table, out_dir)
    print(f"\n{len(runs)} runs in {len(table)} configurations; {skipped} files skipped; wrote {', '.join(written)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
