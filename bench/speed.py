"""Side-by-side decoding speed, in ONE process, on the same prompts and model, runs alternated after warm-up.

Compares our engine against HF generate (greedy; on CUDA also with SDPA forced to flash attention) and against
the weight-streaming bound (one matrix-vector product over every weight matrix per token); our engine with
torch's own linear kernel (so the loop and the kernel are credited separately); self-speculative decoding
against HF's assistant_early_exit at the same E and d, and with a fitted exit adapter, adaptive draft length and a
trimmed draft vocabulary;
angular pruning against the ideal implied by the measured time share of the removed layers; low-rank and gated
variants against base; and a mechanics check on a model whose layers >= E are exact identities (every draft
accepted) against the theoretical bound. Ratios are the result; absolute numbers are context.

    .venv/bin/python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6
"""
from __future__ import annotations

import argparse
import os

from bench_flags import add_side_by_side_flags
from layerbench.errors import OneLineArgumentParser, non_negative_int, positive_int, run_script
from doc_tables import Section, render_ratio_tables


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_side_by_side_flags(ap, samples=2, max_tokens=40)
    spec = groups["self-speculation"]
    spec.add_argument("--draft_confidence", type=float, default=0.6,
                      help="adaptive draft length of the exit-adapter run (bench/draft_confidence.py measured 0.6; "
                           "default: 0.6)")
    spec.add_argument("--draft_vocabulary", type=non_negative_int, default=2048,
                      help="draft vocabulary of the exit-adapter run (0: the full vocabulary; default: 2048)")
    spec.add_argument("--skip_hf_early_exit", action="store_true", help="HF assisted early exit is slow on CPU")
    groups["model and prompts"].add_argument("--prune_n", type=positive_int, default=6,
                                             help="layers the angular-pruning run removes (default: 6)")
    groups["output"].add_argument("--out", default=None,
                                  help="folder for speed_<timestamp>.json (default: results/<cpu|gpu>)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from speed_report import run  # the heavy imports come after the flags, so a bad flag is answered at once
    run(a)


def render(files: list[tuple[str, dict]]) -> str:
    kernels = [f"{os.path.basename(p)}: linear kernel {d.get('linear_kernel')}" for p, d in files]
    return render_ratio_tables(files) + "\n\n" + "\n".join(f"- {k}" for k in kernels)


SECTION = Section("Speed on CPU (bench/speed.py)", "cpu/speed_*.json",
                  "python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6",
                  "Every run alternates over the same prompts in one process; each column is one process. Ratios of "
                  "different processes are not comparable beyond the 10-20% noise of this machine.", render)


if __name__ == "__main__":
    run_script(main)
