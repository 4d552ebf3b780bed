"""LayerSkip's exit-layer x speculation sweep: self-speculative decoding at every exit layer E and draft length d
(and optionally draft confidence c), all runs alternated in ONE process with autoregressive decoding on the same
prompts. Writes a CSV and a JSON of the grid, contour plots (PNG) of the speed-up against autoregressive decoding
and of the acceptance, and prints the best cell; every cell's greedy output is checked against autoregressive.

    .venv/bin/python bench/sweep_exit.py --exit_layers 6 10 14 18 22 26 --speculations 2 4 6 --samples 2 \
        --max_tokens 32 [--exit_adapter linear] [--draft_confidences 0.5 0.7]
"""
from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tabulate import tabulate

from doc_tables import Section, table
from layerbench.decoding import GenerationConfig
from layerbench.errors import OneLineArgumentParser, UsageError, positive_int, run_script
from layerbench.lazy import lazy
from runner import (Stats, add_model_and_prompt_flags, load_prompts, our_runner, pruned_copy, result_stem,
                    run_alternating, write_result)

pd = lazy("pandas")
if TYPE_CHECKING:
    from layerbench.engine.engine import Engine


def confidence(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_and_prompt_flags(ap, samples=2, max_tokens=32, rounds=1)
    ap.add_argument("--exit_layers", type=positive_int, nargs="+", default=[6, 10, 14, 18, 22, 26],
                    help="exit layers E (draft with layers [0, E)); each must be below the model's layer count")
    ap.add_argument("--speculations", type=positive_int, nargs="+", default=[2, 4, 6],
                    help="draft lengths d")
    ap.add_argument("--draft_confidences", type=confidence, nargs="*", default=[],
                    help="also sweep these draft confidences c (stop drafting below c); default: none")
    ap.add_argument("--exit_adapter", choices=["none", "linear"], default="none",
                    help="linear: fit an exit adapter for every exit layer (on --calibration_samples train texts)")
    ap.add_argument("--out", default="results/sweep_exit", help="directory for the CSV, JSON and PNGs")
    return ap.parse_args(argv)


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


def sweep_engine(loaded, calibration: list[list[int]], a: argparse.Namespace) -> tuple[Engine, dict]:
    """The engine every run uses; with --exit_adapter linear, on a copy of the model holding one fitted adapter
    per exit layer (autoregressive decoding never reads them)."""
    layers = loaded.model.config.num_hidden_layers
    if max(a.exit_layers) >= layers:
        raise UsageError(f"--exit_layers {max(a.exit_layers)}: must be below the model's {layers} layers")
    from layerbench.engine.engine import Engine
    from layerbench.surgery.config import PruneConfig
    from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
    if a.exit_adapter == "none":
        return Engine(loaded.model), {}
    adapted, _ = pruned_copy(loaded.model, loaded.tokenizer,
                             PruneConfig(method="base", calibration_samples=len(calibration)), calibration, a.dataset)
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
    from sweep_exit_plot import plot_sweep  # matplotlib
    stem = result_stem(a.out, f"sweep_exit_{a.exit_adapter}")
    paths = {"csv": stem + ".csv", "json": stem + ".json"}
    frame = pd.DataFrame(rows)
    frame.to_csv(paths["csv"], index=False)
    paths.update(plot_sweep(frame, stem))
    doc["files"] = {k: os.path.basename(p) for k, p in paths.items()}
    write_result(a.out, "", doc, stem=stem)
    return paths


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from layerbench.models.loading import load_model
    from layerbench.runs.run_log import environment
    loaded = load_model(a.model, a.dtype, a.device)
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    engine, adapters = sweep_engine(loaded, calibration, a)
    cells = grid(a)
    runners = {AUTOREGRESSIVE: our_runner(engine, "autoregressive", GenerationConfig(max_steps=a.max_tokens))}
    for cell in cells:
        runners[cell.name] = our_runner(engine, "self_speculative", GenerationConfig(
            max_steps=a.max_tokens, exit_block=cell.exit_layer, num_speculations=cell.num_speculations,
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


def grid_table(rows: list[dict], value: str) -> str:
    """`value` over the sweep's grid: one row per (draft confidence, d), one column per exit layer E."""
    layers = sorted({r["exit_layer"] for r in rows})
    keys = sorted({(r["draft_confidence"] or 0.0, r["num_speculations"]) for r in rows})
    cells = {(r["draft_confidence"] or 0.0, r["num_speculations"], r["exit_layer"]): r[value] for r in rows}
    body = [[c or "off", d, *(cells.get((c, d, E)) for E in layers)] for c, d in keys]
    return table(body, ["draft confidence", "d \\ E", *(str(E) for E in layers)])


def render(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        a, best = doc["args"], doc["best"]
        equal = sum(r["greedy_equal_to_autoregressive"] for r in doc["rows"])
        conf = f" c={best['draft_confidence']}" if best["draft_confidence"] is not None else ""
        pngs = " ".join(f"[{k[:-4]}](../{os.path.relpath(os.path.join(os.path.dirname(path), doc['files'][k]))})"
                        for k in ("speedup_png", "acceptance_png"))
        out.append(
            f"`{os.path.basename(path)}`: exit adapter {a['exit_adapter']}, {doc['model']} ({doc['num_layers']} "
            f"layers), {doc['prompts']} prompt(s) x {a['max_tokens']} tokens, {a['rounds']} timed round(s); "
            f"autoregressive {doc['autoregressive_tokens_per_second']:.2f} tok/s. Command: `{doc['command']}`\n\n"
            f"Speed-up against autoregressive decoding:\n\n{grid_table(doc['rows'], 'speedup')}\n\n"
            f"Acceptance:\n\n{grid_table(doc['rows'], 'acceptance')}\n\n"
            f"Best cell: E={best['exit_layer']} d={best['num_speculations']}{conf}, speed-up {best['speedup']:.3f}, "
            f"acceptance {best['acceptance']:.3f}. Greedy outputs equal to autoregressive in {equal}/"
            f"{len(doc['rows'])} cells. Contour plots: {pngs}")
    return "\n\n".join(out)


SECTION = Section("Exit layer x speculations (bench/sweep_exit.py)", "sweep_exit/*.json",
                  "python bench/sweep_exit.py --exit_layers 6 12 18 24 --speculations 2 4 6 --samples 2 --max_tokens 24 "
                  "--rounds 2 --calibration_samples 8 [--exit_adapter linear]",
                  "LayerSkip's sweep: self-speculative decoding at each exit layer E and draft length d, every cell "
                  "alternated with autoregressive decoding in one process on the same prompts (one file per process). "
                  "The grid was sized to finish in about ten minutes on the shared 2-core CPU; speed-ups of different "
                  "files are not comparable beyond this machine's noise.", render)


if __name__ == "__main__":
    run_script(main)
