"""LayerSkip's exit-layer x speculation sweep: self-speculative decoding at every exit layer E and draft length d
(and optionally draft confidence c), all runs alternated in ONE process with autoregressive decoding on the same
prompts. Writes a CSV and a JSON of the grid, contour plots (PNG) of the speed-up against autoregressive decoding
and of the acceptance, and prints the best cell; every cell's greedy output is checked against autoregressive.

    .venv/bin/python bench/sweep_exit.py --exit_layers 6 10 14 18 22 26 --speculations 2 4 6 --samples 2 \
        --max_tokens 32 [--exit_adapter linear] [--draft_confidences 0.5 0.7]
"""
from __future__ import annotations

import argparse
import os

from bench_flags import add_model_and_prompt_flags
from layerbench.errors import OneLineArgumentParser, positive_int, run_script
from doc_tables import Section, table


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


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from sweep_exit_runs import run  # heavy imports after the flags: a bad flag is answered at once
    run(a)


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
