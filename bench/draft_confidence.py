"""Which draft confidence (and draft vocabulary) makes self-speculative decoding with an exit adapter fastest: for
each setting, tokens/s relative to autoregressive decoding, acceptance and mean draft length, all runs alternated
in ONE process on the same prompts (the adapter and the vocabulary come from the train split).

    .venv/bin/python bench/draft_confidence.py --exit_layer 20 --num_speculations 4 --confidences 0.4 0.6 \
        --vocabularies 0 4096
"""
from __future__ import annotations

import argparse

from layerbench.errors import OneLineArgumentParser, positive_int, run_script


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--dataset", default="aclsum_summarization")
    ap.add_argument("--data_path", default=None)
    ap.add_argument("--samples", type=positive_int, default=3)
    ap.add_argument("--max_tokens", type=positive_int, default=48)
    ap.add_argument("--rounds", type=positive_int, default=2)
    ap.add_argument("--exit_layer", type=positive_int, default=20)
    ap.add_argument("--num_speculations", type=positive_int, default=4)
    ap.add_argument("--confidences", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    ap.add_argument("--vocabularies", type=int, nargs="+", default=[0],
                    help="draft vocabulary sizes to try (0: the full vocabulary)")
    ap.add_argument("--calibration_samples", type=positive_int, default=32)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", default="results/cpu")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from draft_confidence_runs import run  # heavy imports after the flags are read
    run(a)


if __name__ == "__main__":
    run_script(main)
