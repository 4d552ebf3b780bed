"""Per-step time of the decoder layers and the LM head with torch's F.linear and with the few-row product, in ONE
process on the same model, alternating, for 1 row (autoregressive step) and k+1 rows (verification); and what
fusing q/k/v and gate/up into one product per input would gain.

    .venv/bin/python bench/linear_kernels.py --rows 1 5 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from tabulate import tabulate

from doc_tables import Section, table
from layerbench.engine.phases import VERIFY
from layerbench.errors import OneLineArgumentParser, positive_int, run_script
from layerbench.lazy import lazy
from runner import write_result

torch = lazy("torch")
if TYPE_CHECKING:
    from layerbench.engine.engine import Engine


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


def step_times(engine: Engine, context: int, rows: int, steps: int) -> tuple[float, float]:
    """(ms for all decoder layers, ms for norm + LM head) per step of `rows` new tokens."""
    with torch.inference_mode():
        return _step_times(engine, context, rows, steps)


def _step_times(engine: Engine, context: int, rows: int, steps: int) -> tuple[float, float]:
    cache = engine.new_cache(context + rows + 1)
    engine.run(cache, 0, 0, engine.num_blocks, input_ids=torch.randint(0, 1000, (1, context)))
    ids = torch.full((1, rows), 5)

    def layers() -> torch.Tensor:
        return engine.run(cache, context, 0, engine.num_blocks, input_ids=ids, phase=VERIFY)

    for _ in range(3):
        hidden = layers()
    t0 = time.perf_counter()
    for _ in range(steps):
        layers()
    t_layers = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.logits(hidden)
    return t_layers * 1e3, (time.perf_counter() - t0) / steps * 1e3


def fusion_times(model, rows: int, steps: int, kernel: str) -> tuple[float, float]:
    """(ms separate, ms fused) for the q/k/v and gate/up products of every layer with `kernel`; the fused
    weights are copies made for this measurement only."""
    with torch.inference_mode():
        return _fusion_times(model, rows, steps, kernel)


def _fusion_times(model, rows: int, steps: int, kernel: str) -> tuple[float, float]:
    from layerbench.engine.linear_kernels import KERNELS
    from layerbench.models.families import get_family
    family = get_family(model)
    groups = [family.qkv, family.mlp_in]
    separate, fused = [], []
    for layer in family.layers(model):
        for names in groups:
            if len(names) < 2:
                continue
            mods = [layer.get_submodule(n) for n in names]
            separate.append([KERNELS[kernel](m) for m in mods])
            cat = torch.nn.Linear(mods[0].in_features, sum(m.out_features for m in mods), bias=False)
            cat.weight.copy_(torch.cat([m.weight for m in mods]))
            fused.append([KERNELS[kernel](cat)])
    x = torch.randn(1, rows, model.config.hidden_size)

    def timed(projections) -> float:
        for _ in range(3):
            [p(x) for group in projections for p in group]
        t0 = time.perf_counter()
        for _ in range(steps):
            [p(x) for group in projections for p in group]
        return (time.perf_counter() - t0) / steps * 1e3
    return timed(separate), timed(fused)


def main() -> None:
    a = parse()
    from layerbench.engine.engine import Engine, EngineOptions
    from layerbench.models.loading import load_model
    model = load_model(a.model, "float32", "cpu").model
    kernels = ("torch", "few_row_mm", "tuned")
    engines = {k: Engine(model, EngineOptions(linear_kernel=k)) for k in kernels}
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    fusion: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(a.rounds):
        for kernel, engine in engines.items():
            for rows in a.rows:
                results.setdefault((kernel, rows), []).append(step_times(engine, a.context, rows, a.steps))
        for kernel in kernels[:2]:
            for rows in a.rows:
                fusion.setdefault((kernel, rows), []).append(fusion_times(model, rows, a.steps, kernel))
    measured = []
    for rows in a.rows:
        layers = {k: min(r[0] for r in results[(k, rows)]) for k in kernels}
        head = {k: min(r[1] for r in results[(k, rows)]) for k in kernels}
        fused = {k: [min(f[i] for f in fusion[(k, rows)]) for i in (0, 1)] for k in kernels[:2]}
        measured.append([rows, *(layers[k] for k in kernels), *(head[k] for k in kernels),
                      *(fused[k][0] / fused[k][1] for k in kernels[:2])])
    print(tabulate(measured, headers=["rows", "layers ms: torch", "few_row_mm", "tuned", "head ms: torch", "few_row_mm",
                                   "tuned", "qkv+gate/up fused speedup: torch", "few_row_mm"],
                   floatfmt=".2f", tablefmt="github"))
    print(f"tuned kernel uses the few-row product at rows {engines['tuned'].kernel.detail['few_row_mm_rows']}")
    print(f"context: {model.config.num_hidden_layers} layers, {a.context} cached tokens, best of {a.rounds} "
          f"alternating rounds x {a.steps} steps, {torch.get_num_threads()} threads")
    write_result(a.out, "linear_kernels", {
        "args": vars(a), "columns": ["rows", "layers_ms_torch", "layers_ms_few_row_mm", "layers_ms_tuned",
                                     "head_ms_torch", "head_ms_few_row_mm", "head_ms_tuned", "fusion_speedup_torch",
                                     "fusion_speedup_few_row_mm"], "rows": measured,
        "tuned_few_row_mm_rows": engines["tuned"].kernel.detail["few_row_mm_rows"]})


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
