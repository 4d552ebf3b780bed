"""The engine before and after it ran its own forward, side by side in ONE process: the decoding loop of commit
827625c (which called Hugging Face's decoder layers, with its few-row linear kernel always on for fp32 CPU)
against the current engine, on the same model and prompts, runs alternated. That code needs transformers 5.23
(5.24 changed the layer protocol it relied on), so run this in such an environment:

    git worktree add /tmp/old 827625c
    python bench/old_engine_vs_new.py --old_checkout /tmp/old
"""
from __future__ import annotations

import argparse
import os

from layerbench.errors import OneLineArgumentParser, UsageError, positive_int, run_script


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old_checkout", required=True, help="a checkout of commit 827625c")
    ap.add_argument("--samples", type=positive_int, default=2)
    ap.add_argument("--max_tokens", type=positive_int, default=40)
    ap.add_argument("--rounds", type=positive_int, default=2)
    ap.add_argument("--exit_layer", type=positive_int, default=20)
    ap.add_argument("--num_speculations", type=positive_int, default=4)
    ap.add_argument("--out", default="results/cpu")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.old_checkout, "decoding.py")):
        raise UsageError(f"--old_checkout {a.old_checkout}: no decoding.py there (check out commit 827625c)")
    return a


def main() -> None:
    a = parse()
    from old_engine_runs import run  # heavy imports after the flags are read
    run(a)


if __name__ == "__main__":
    run_script(main)
