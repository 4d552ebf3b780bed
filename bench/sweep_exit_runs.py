"""The measurement behind bench/sweep_exit.py: one engine (with an exit adapter per exit layer when asked), one
runner per cell plus autoregressive decoding, alternated by bench/speed_runs.py's run_alternating."""
from __future__ import annotations

import argparse
import copy
import itertools
import os
import shlex
import sys
from dataclasses import asdict, dataclass

import pandas as pd
from tabulate import tabulate

from layerbench.decoding import GenerationConfig
from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.models.loading import LoadedModel, load_model
from layerbench.runs.run_log import environment
from layerbench.surgery.calibration import Calibration
from layerbench.surgery.config import PruneConfig
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
from layerbench.surgery.prune_model import PruneModel
from speed_report import load_prompts
from runner import Stats, result_stem, run_alternating, write_result
from speed_runs import our_runner
from sweep_exit_plot import plot_sweep

AUTOREGRESSIVE = "autoregressive"


@dataclass(frozen=True)
class Cell:
    exit_layer: int
    num_speculations: int
    draft_confidence: float | None

    @property
    def name(self) -> str:
        c = f" c={self.draft_confidence}" if self.draft_confidence is not None else ""
        return f"E={self.exit_layer} d={self.num_speculations}{c}"


def grid(a: argparse.Namespace) -> list[Cell]:
    return [Cell(E, d, c) for E, d, c in itertools.product(sorted(set(a.exit_layers)), sorted(set(a.speculations)),
                                                           [None, *sorted(set(a.draft_confidences))])]


def sweep_engine(loaded: LoadedModel, calibration: list[list[int]], a: argparse.Namespace) -> tuple[Engine, dict]:
    """The engine every run uses; with --exit_adapter linear, on a copy of the model holding one fitted adapter
    per exit layer (autoregressive decoding never reads them)."""
    layers = loaded.model.config.num_hidden_layers
    if max(a.exit_layers) >= layers:
        raise UsageError(f"--exit_layers {max(a.exit_layers)}: must be below the model's {layers} layers")
    if a.exit_adapter == "none":
        return Engine(loaded.model), {}
    adapted = PruneModel(copy.deepcopy(loaded.model), loaded.tokenizer,
                         PruneConfig(method="base", calibration_samples=len(calibration)),
                         lambda: Calibration(calibration, {"dataset": a.dataset, "split": "train"}))
    adapted.apply()
    reports = {E: install_exit_adapter(adapted, fit_exit_adapter(adapted, E)) for E in sorted(set(a.exit_layers))}
    return Engine(adapted.model), reports


def cell_rows(cells: list[Cell], stats: dict[str, Stats], outputs: dict[str, list[list[int]]],
              adapter: str) -> list[dict]:
    ar = stats[AUTOREGRESSIVE].tokens_per_second
    return [{**asdict(cell), "exit_adapter": adapter, "tokens_per_second": stats[cell.name].tokens_per_second,
             "speedup": stats[cell.name].tokens_per_second / ar, "acceptance": stats[cell.name].acceptance,
             "mean_draft_length": stats[cell.name].mean_draft_length,
             "greedy_equal_to_autoregressive": outputs[cell.name] == outputs[AUTOREGRESSIVE]} for cell in cells]


def write(a: argparse.Namespace, rows: list[dict], doc: dict) -> dict[str, str]:
    """CSV, JSON and the two PNGs under --out; returns their paths."""
    stem = result_stem(a.out, f"sweep_exit_{a.exit_adapter}")
    paths = {"csv": stem + ".csv", "json": stem + ".json"}
    frame = pd.DataFrame(rows)
    frame.to_csv(paths["csv"], index=False)
    paths.update(plot_sweep(frame, stem))
    doc["files"] = {k: os.path.basename(p) for k, p in paths.items()}
    write_result(a.out, "", doc, stem=stem)
    return paths


def run(a: argparse.Namespace) -> None:
    loaded = load_model(a.model, a.dtype, a.device)
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    engine, adapters = sweep_engine(loaded, calibration, a)
    cells = grid(a)
    runners = {AUTOREGRESSIVE: our_runner(engine, "autoregressive", GenerationConfig(max_steps=a.max_tokens))}
    for cell in cells:
        runners[cell.name] = our_runner(engine, "self_speculative", GenerationConfig(
            max_steps=a.max_tokens, exit_layer=cell.exit_layer, num_speculations=cell.num_speculations,
            draft_confidence=cell.draft_confidence))
    stats, outputs = run_alternating(runners, prompts, a.rounds)
    rows = cell_rows(cells, stats, outputs, a.exit_adapter)
    best = max(rows, key=lambda r: r["speedup"])
    doc = {"what": "self-speculative decoding over exit layer x speculations, alternated with autoregressive "
                   "decoding in one process", "command": "python bench/sweep_exit.py " + shlex.join(sys.argv[1:]),
           "args": vars(a), "model": loaded.name, "environment": environment(engine.device, 1),  # the engine's
           "num_layers": loaded.model.config.num_hidden_layers, "prompts": len(prompts),
           "autoregressive_tokens_per_second": stats[AUTOREGRESSIVE].tokens_per_second,
           "all_greedy_equal": all(r["greedy_equal_to_autoregressive"] for r in rows), "best": best, "rows": rows,
           "exit_adapters": {str(E): r for E, r in adapters.items()}}
    paths = write(a, rows, doc)
    frame = pd.DataFrame(rows)
    for value in ("speedup", "acceptance"):
        pivot = frame.pivot_table(index=["draft_confidence", "num_speculations"] if a.draft_confidences
                                  else "num_speculations", columns="exit_layer", values=value, dropna=False)
        print(f"{value} (rows: d, columns: E)\n" + tabulate(pivot, headers="keys", tablefmt="github", floatfmt=".3f"))
    print(f"best cell: {Cell(best['exit_layer'], best['num_speculations'], best['draft_confidence']).name}: "
          f"speed-up {best['speedup']:.3f}, acceptance {best['acceptance']:.3f}; greedy outputs equal to "
          f"autoregressive in {sum(r['greedy_equal_to_autoregressive'] for r in rows)}/{len(rows)} cells")
    print("wrote " + ", ".join(paths.values()))
