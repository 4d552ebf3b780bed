"""The measurements of bench/linear_kernels.py (its flags are read there, before torch is imported)."""
from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from layerbench.engine.engine import VERIFY, Engine, EngineOptions
from layerbench.engine.linear_kernels import KERNELS
from layerbench.models.families import get_family
from runner import write_result


@torch.inference_mode()
def step_times(engine: Engine, context: int, rows: int, steps: int) -> tuple[float, float]:
    """(ms for all decoder layers, ms for norm + LM head) per step of `rows` new tokens."""
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


@torch.inference_mode()
def fusion_times(model, rows: int, steps: int, kernel: str) -> tuple[float, float]:
    """(ms separate, ms fused) for the q/k/v and gate/up products of every layer with `kernel`; the fused
    weights are copies made for this measurement only."""
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


def run(a: argparse.Namespace) -> None:
    from layerbench.models.loading import load_model  # imports transformers: after the flags are read
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
    table = []
    for rows in a.rows:
        layers = {k: min(r[0] for r in results[(k, rows)]) for k in kernels}
        head = {k: min(r[1] for r in results[(k, rows)]) for k in kernels}
        fused = {k: [min(f[i] for f in fusion[(k, rows)]) for i in (0, 1)] for k in kernels[:2]}
        table.append([rows, *(layers[k] for k in kernels), *(head[k] for k in kernels),
                      *(fused[k][0] / fused[k][1] for k in kernels[:2])])
    print(tabulate(table, headers=["rows", "layers ms: torch", "few_row_mm", "tuned", "head ms: torch", "few_row_mm",
                                   "tuned", "qkv+gate/up fused speedup: torch", "few_row_mm"],
                   floatfmt=".2f", tablefmt="github"))
    print(f"tuned kernel uses the few-row product at rows {engines['tuned'].kernel.detail['few_row_mm_rows']}")
    print(f"context: {model.config.num_hidden_layers} layers, {a.context} cached tokens, best of {a.rounds} "
          f"alternating rounds x {a.steps} steps, {torch.get_num_threads()} threads")
    write_result(a.out, "linear_kernels", {
        "args": vars(a), "columns": ["rows", "layers_ms_torch", "layers_ms_few_row_mm", "layers_ms_tuned",
                                     "head_ms_torch", "head_ms_few_row_mm", "head_ms_tuned", "fusion_speedup_torch",
                                     "fusion_speedup_few_row_mm"], "rows": table,
        "tuned_few_row_mm_rows": engines["tuned"].kernel.detail["few_row_mm_rows"]})
