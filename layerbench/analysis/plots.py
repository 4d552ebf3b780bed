"""Plots of aggregated run tables: quality vs speed with its Pareto front, and speedup per approach."""
from __future__ import annotations

import os

import pandas as pd

from layerbench.decoding import STRATEGIES
from layerbench.surgery.methods import BASELINE


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
        short = {name: strategy.short for name, strategy in STRATEGIES.items()}
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
        colors = ["tab:gray" if a == BASELINE else "tab:blue" for a in sub["approach"]]
        yerr = None
        if "speedup_ci_low" in sub:  # paired-bootstrap 95% intervals (none for unpaired rows)
            yerr = [(sub["speedup"] - sub["speedup_ci_low"]).fillna(0), (sub["speedup_ci_high"] - sub["speedup"]).fillna(0)]
        ax.bar(range(len(sub)), sub["speedup"], color=colors, yerr=yerr, capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(sub)), labels, fontsize=6, rotation=45, ha="right")
        ax.set_ylabel("speedup vs base (tokens/s), paired 95% interval")
        ax.set_title("Speedup per approach")
        fig.tight_layout()
        path = os.path.join(out_dir, "speedup.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
