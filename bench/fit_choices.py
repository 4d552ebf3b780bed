"""How the closed-form fits should be made: for linear stand-ins of the layers angular pruning removes, the test
perplexity each fitting choice gives (ridge strength; position 0 in the map, or left out of it with its own
constant update; rows weighted by 1/|x| or not); for exit adapters, teacher-forced top-1 agreement of the early
exit with the full model. Calibration on the train split,
evaluation on test samples, so no fit sees an evaluated sample.

    .venv/bin/python bench/fit_choices.py --prune_n 6 --exit_layers 20 24
"""
from __future__ import annotations

import argparse

from layerbench.errors import OneLineArgumentParser, positive_int, run_script


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="local model folder or hub id (default: the embedded "
                                                   "SmolLM2-135M-Instruct)")
    ap.add_argument("--prune_n", type=positive_int, default=6,
                    help="stand-ins: layers angular pruning removes (default: 6)")
    ap.add_argument("--exit_layers", type=positive_int, nargs="+", default=[20, 24],
                    help="exit adapters: the exit layers to fit (default: 20 24)")
    ap.add_argument("--calibration_samples", type=positive_int, default=32,
                    help="train-split texts the maps are fitted on (default: 32)")
    ap.add_argument("--eval_samples", type=positive_int, default=20,
                    help="test-split texts the choices are scored on (default: 20)")
    ap.add_argument("--out", default="results/quality",
                    help="folder for fit_choices_<timestamp>.json (default: results/quality)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from fit_choices_runs import run  # torch and transformers are imported after the flags are read
    run(a)


if __name__ == "__main__":
    run_script(main)
