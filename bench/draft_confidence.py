"""Which draft confidence (and draft vocabulary) makes self-speculative decoding with an exit adapter fastest: for
each setting, tokens/s relative to autoregressive decoding, acceptance and mean draft length, all runs alternated
in ONE process on the same prompts (the adapter and the vocabulary come from the train split).

    .venv/bin/python bench/draft_confidence.py --exit_layer 20 --num_speculations 4 --confidences 0.4 0.6 \
        --vocabularies 0 4096
"""
from __future__ import annotations

import argparse
import os

from bench_flags import add_side_by_side_flags
from layerbench.errors import OneLineArgumentParser, non_negative_int, run_script
from doc_tables import Section, table


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_side_by_side_flags(ap, samples=3, max_tokens=48)
    spec = groups["self-speculation"]
    spec.add_argument("--confidences", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                      help="draft confidences to try (default: 0.1 to 0.7 in steps of 0.1)")
    spec.add_argument("--vocabularies", type=non_negative_int, nargs="+", default=[0],
                      help="draft vocabulary sizes to try (0: the full vocabulary; default: 0)")
    groups["output"].add_argument("--out", default="results/cpu", help="folder for the JSON (default: results/cpu)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from draft_confidence_runs import run  # heavy imports after the flags are read
    run(a)


DRAFT_CONFIDENCE_COLUMNS = ["run", "tokens/s vs autoregressive", "acceptance", "mean draft length",
                            "same tokens as autoregressive"]


def render(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join(f"`{os.path.basename(p)}`, exit adapter fit: relative error "
                       f"{d['exit_adapter']['relative_error_before']:.3f} -> "
                       f"{d['exit_adapter']['relative_error_after']:.3f} in {d['exit_adapter']['fit_seconds']:.1f} s:"
                       f"\n\n" + table(d["rows"], DRAFT_CONFIDENCE_COLUMNS) for p, d in files)


SECTION = Section("Adaptive draft length and draft vocabulary (bench/draft_confidence.py)",
                  "cpu/draft_confidence_*.json",
                  "python bench/draft_confidence.py  (the second file: --confidences 0.5 0.6 0.7 --vocabularies 0 2048 8192)",
                  "Self-speculative decoding at E=20, d=4 with a fitted exit adapter, against autoregressive decoding in "
                  "the same process.", render)


if __name__ == "__main__":
    run_script(main)
