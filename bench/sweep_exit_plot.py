"""Contour plots of bench/sweep_exit.py's grid: one panel per draft confidence, exit layer E across, draft length d
up, every cell's value written at its point. Run alone, it draws them again from sweep CSVs:

    python bench/sweep_exit_plot.py results/sweep_exit/sweep_exit_none_<time>.csv
"""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def padded(values: np.ndarray) -> tuple[float, float]:
    """Axis limits a little beyond the grid, so the points and their labels at the edges stay visible."""
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    return float(values[0]) - step / 4, float(values[-1]) + step / 4


def contour(frame: pd.DataFrame, value: str, title: str, path: str) -> None:
    """Filled contours of `value` over (exit_layer, num_speculations); a grid with a single E or d (no area to
    contour) is drawn as coloured points."""
    panels = list(dict.fromkeys(frame["confidence"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        grid = frame[frame["confidence"] == panel].pivot(index="num_speculations", columns="exit_layer",
                                                         values=value)
        x, y = np.meshgrid(grid.columns.to_numpy(), grid.index.to_numpy())
        z = grid.to_numpy(dtype=float)
        if z.shape[0] >= 2 and z.shape[1] >= 2:
            shade = ax.contourf(x, y, z, levels=12, cmap="viridis")
        else:
            shade = ax.scatter(x, y, c=z, cmap="viridis", s=200)
        fig.colorbar(shade, ax=ax, label=value)
        ax.scatter(x, y, c="black", s=6)
        for xi, yi, zi in zip(x.ravel(), y.ravel(), z.ravel()):
            ax.annotate(f"{zi:.2f}", (xi, yi), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
        ax.set_xticks(grid.columns.to_numpy())
        ax.set_yticks(grid.index.to_numpy())
        ax.set_xlim(*padded(grid.columns.to_numpy()))
        ax.set_ylim(*padded(grid.index.to_numpy()))
        ax.set_xlabel("exit layer E")
        ax.set_ylabel("speculations d")
        ax.set_title(f"{title}\ndraft confidence {panel}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(frame: pd.DataFrame, stem: str) -> dict[str, str]:
    """Both plots of one sweep (rows as in its CSV) as `<stem>_speedup.png` and `<stem>_acceptance.png`."""
    frame = frame.assign(confidence=frame["draft_confidence"].map(lambda c: "off" if pd.isna(c) else f"{c:g}"))
    adapter = f"exit adapter {frame['exit_adapter'].iloc[0]}"
    paths = {"speedup_png": stem + "_speedup.png", "acceptance_png": stem + "_acceptance.png"}
    contour(frame, "speedup", f"speed-up vs autoregressive ({adapter})", paths["speedup_png"])
    contour(frame, "acceptance", f"acceptance ({adapter})", paths["acceptance_png"])
    return paths


if __name__ == "__main__":
    for csv in sys.argv[1:]:
        print("wrote " + ", ".join(plot_sweep(pd.read_csv(csv), csv.removesuffix(".csv")).values()))
