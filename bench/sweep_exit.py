"""LayerSkip's exit-layer x speculation sweep: self-speculative decoding at every exit layer E and draft length d
(and optionally draft confidence c), all runs alternated in ONE process with autoregressive decoding on the same
prompts. Writes a CSV and a JSON of the grid, contour plots (PNG) of the speed-up against autoregressive decoding
and of the acceptance, and prints the best cell; every cell's greedy output is checked against autoregressive.

    .venv/bin/python bench/sweep_exit.py --exit_layers 6 10 14 18 22 26 --speculations 2 4 6 --samples 2 \
        --max_tokens 32 [--exit_adapter linear] [--draft_confidences 0.5 0.7]
"""
from __future__ import annotations

import argparse

from bench_flags import add_model_and_prompt_flags
from layerbench.errors import OneLineArgumentParser, positive_int, run_script


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


if __name__ == "__main__":
    run_script(main)
