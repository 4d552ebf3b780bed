"""Per-step time of the decoder layers and the LM head with torch's F.linear and with the few-row product, in ONE
process on the same model, alternating, for 1 row (autoregressive step) and k+1 rows (verification); and what
fusing q/k/v and gate/up into one product per input would gain.

    .venv/bin/python bench/linear_kernels.py --rows 1 5 --rounds 3
"""
from __future__ import annotations

import argparse
import os

from layerbench.errors import OneLineArgumentParser, positive_int, run_script
from doc_tables import Section, table


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    model = ap.add_argument_group("model")
    model.add_argument("--model", default=None, help="local model folder or hub id (default: the embedded "
                                                      "SmolLM2-135M-Instruct)")
    timing = ap.add_argument_group("timing")
    timing.add_argument("--context", type=positive_int, default=250,
                        help="tokens already in the KV cache (default: 250)")
    timing.add_argument("--rows", type=positive_int, nargs="+", default=[1, 5],
                        help="rows (new tokens) per step to time (default: 1 5)")
    timing.add_argument("--steps", type=positive_int, default=30, help="timed steps per measurement (default: 30)")
    timing.add_argument("--rounds", type=positive_int, default=3,
                        help="alternating rounds; the best is kept (default: 3)")
    out = ap.add_argument_group("output")
    out.add_argument("--out", default="results/cpu",
                     help="folder for linear_kernels_<timestamp>.json (default: results/cpu)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from linear_kernels_runs import run  # torch and transformers are imported after the flags are read
    run(a)


def render(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        out.append(f"`{os.path.basename(path)}` (tuned kernel picks the few-row product at rows "
                   f"{doc.get('tuned_few_row_mm_rows')}):\n\n" + table(doc["rows"], doc["columns"], ".2f"))
    return "\n\n".join(out)


SECTION = Section("Linear kernels for few-row products (bench/linear_kernels.py)", "cpu/linear_kernels_*.json",
                  "python bench/linear_kernels.py --rows 1 2 3 4 5 8 16 17",
                  "Milliseconds per step over all decoder layers and over the LM head; the last two columns time the "
                  "q/k/v and gate/up products as one fused matrix against separate ones.", render)


if __name__ == "__main__":
    run_script(main)
