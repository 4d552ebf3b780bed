"""Contour plots of bench/sweep_exit.py's grid: one panel per draft confidence, exit layer E across, draft length d
up, every cell's value written at its point."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


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
        for xi, yi, zi in zip(x.ravel(), y.ravel(), z.ravel()):
            ax.annotate(f"{zi:.2f}", (xi, yi), ha="center", va="center", fontsize=7, color="white")
        ax.set_xlabel("exit layer E")
        ax.set_ylabel("speculations d")
        ax.set_title(f"{title}, draft confidence {panel}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
