"""Per-step time of the decoder layers and the LM head with torch's nn.Linear kernel and with our FewRowLinear,
in ONE process on the same model, alternating, for 1 row (autoregressive step) and k+1 rows (verification).

    .venv/bin/python bench/linear_kernels.py --rows 1 5 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from errors import OneLineArgumentParser, positive_int, run_script  # noqa: E402
from decoding import Decoder  # noqa: E402
from fast_linear import restore_linears  # noqa: E402
from model_loading import load_model  # noqa: E402


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--context", type=positive_int, default=250, help="tokens already in the KV cache")
    ap.add_argument("--rows", type=positive_int, nargs="+", default=[1, 5])
    ap.add_argument("--steps", type=positive_int, default=30)
    ap.add_argument("--rounds", type=positive_int, default=3)
    return ap.parse_args()


@torch.inference_mode()
def step_times(decoder: Decoder, context: int, rows: int, steps: int) -> tuple[float, float]:
    """(ms for all decoder layers, ms for norm + LM head) per step of `rows` new tokens."""
    cache = decoder.new_cache(context + rows + 1)
    decoder.run(cache, 0, 0, decoder.num_layers, input_ids=torch.randint(0, 1000, (1, context)))
    ids = torch.full((1, rows), 5)

    def layers() -> torch.Tensor:
        hidden = decoder.run(cache, context, 0, decoder.num_layers, input_ids=ids)
        cache.crop(context)
        return hidden

    for _ in range(3):
        hidden = layers()
    t0 = time.perf_counter()
    for _ in range(steps):
        layers()
    t_layers = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        decoder.logits(hidden)
    return t_layers * 1e3, (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    a = parse()
    model = load_model(a.model, "float32", "cpu").model.eval()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(a.rounds):
        for kernel in ("torch", "few_row_mm"):
            restore_linears(model)
            decoder = Decoder(model, optimize=kernel == "few_row_mm")
            assert decoder.linear_kernel == kernel
            for rows in a.rows:
                results.setdefault((kernel, rows), []).append(step_times(decoder, a.context, rows, a.steps))
    table = []
    for rows in a.rows:
        torch_layers = [r[0] for r in results[("torch", rows)]]
        torch_head = [r[1] for r in results[("torch", rows)]]
        ours_layers = [r[0] for r in results[("few_row_mm", rows)]]
        ours_head = [r[1] for r in results[("few_row_mm", rows)]]
        table.append([rows, min(torch_layers), min(ours_layers), min(torch_layers) / min(ours_layers),
                      min(torch_head), min(ours_head), min(torch_head) / min(ours_head)])
    print(tabulate(table, headers=["rows", "layers ms (torch)", "layers ms (few-row)", "ratio",
                                   "head ms (torch)", "head ms (few-row)", "ratio"], floatfmt=".2f",
                   tablefmt="github"))
    print(f"context: {model.config.num_hidden_layers} layers, {a.context} cached tokens, best of {a.rounds} "
          f"alternating rounds x {a.steps} steps, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    run_script(main)
