"""How the engine applies a linear map, chosen once when the engine is prepared (never inside a timed region).

`torch`: F.linear over the module's weights. `module`: call the module itself (so forward hooks see its inputs;
calibration uses it). `few_row_mm`: torch.mm(W, x.T) with the (out, in) weight as the left operand, one row
computed as two copies of itself; on some CPUs MKL streams the weights much faster this way than through
F.linear's one-row path, on others slower. `tuned` (what `auto` means for fp32 on CPU): both are timed on the
model's own weight matrices at the row counts a decode or verification step uses (1..MAX_ROWS), and a row count
gets the few-row product only where it measured at least 10% faster (`bench/linear_kernels.py` compares them).
Weights are neither copied nor re-laid out, and the model's modules are not changed.

A module that is a composition of linear maps (a low-rank factor pair) binds its parts through
`bind_projection(binder)`, so it gets the same kernel.
"""
from __future__ import annotations

from typing import Callable

import time

import torch
import torch.nn.functional as F
from torch import nn

from layerbench.errors import UsageError

Projection = Callable[[torch.Tensor], torch.Tensor]
MAX_ROWS = 16  # from about 8 rows on, F.linear's ordinary GEMM is as fast


def few_row_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if n == 1:
        rows = torch.cat([rows, rows])
    out = torch.mm(weight, rows.t()).t()[:n]
    if bias is not None:
        out = out + bias
    return out.contiguous().view(*x.shape[:-1], weight.shape[0])


def _few_row(module: nn.Linear) -> Projection:
    weight, bias = module.weight, module.bias

    def project(x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] > MAX_ROWS:
            return F.linear(x, weight, bias)
        return few_row_product(x, weight, bias)
    return project


def _tuned(mm_rows: frozenset[int]) -> Callable[[nn.Linear], Projection]:
    """F.linear, except for the row counts where the few-row product measured faster."""
    def bind(module: nn.Linear) -> Projection:
        weight, bias = module.weight, module.bias

        def project(x: torch.Tensor) -> torch.Tensor:
            if x.numel() // x.shape[-1] in mm_rows:
                return few_row_product(x, weight, bias)
            return F.linear(x, weight, bias)
        return project
    return bind


@torch.inference_mode()
def tune_row_counts(weights: list[torch.Tensor], reps: int = 5, margin: float = 0.9) -> frozenset[int]:
    """Row counts (1..MAX_ROWS) at which the few-row product streams `weights` clearly faster than F.linear: its
    best time, over `reps` rounds that alternate the two kernels, is below `margin` times F.linear's. The margin
    keeps timing noise from flipping row counts where the two are about equal."""
    def one_pass(fn, xs: dict[int, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        for w in weights:
            fn(xs[w.shape[1]], w, None)
        return time.perf_counter() - t0

    def faster(n: int) -> bool:
        xs = {w.shape[1]: torch.randn(1, n, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
        best = {few_row_product: float("inf"), F.linear: float("inf")}
        for r in range(reps + 1):  # the first round warms up
            for fn in (best if r % 2 == 0 else reversed(best)):
                t = one_pass(fn, xs)
                if r:
                    best[fn] = min(best[fn], t)
        return best[few_row_product] < margin * best[F.linear]
    measured = [1, 2, 3, 4, 6, 8, 12, 16]
    chosen = {n for n in measured if faster(n)}
    # a row count between two measured ones follows the smaller one
    return frozenset(n for n in range(1, MAX_ROWS + 1) if max(m for m in measured if m <= n) in chosen)


def _torch(module: nn.Linear) -> Projection:
    weight, bias = module.weight, module.bias
    return lambda x: F.linear(x, weight, bias)


# kernel name -> binder of a plain nn.Linear
KERNELS: dict[str, Callable[[nn.Linear], Projection]] = {
    "torch": _torch,
    "few_row_mm": _few_row,
    "module": lambda module: module,
}


class LinearKernel:
    """The chosen way of applying nn.Linear maps: a name for the log and a binder."""

    def __init__(self, name: str, bind: Callable[[nn.Linear], Projection], detail: dict | None = None) -> None:
        self.name, self.bind, self.detail = name, bind, detail or {}


def choose_kernel(requested: str, model: nn.Module) -> LinearKernel:
    """`auto`: tuned for fp32 on CPU (timed on the model's own matrices), torch elsewhere."""
    names = ("auto", "tuned", *KERNELS)
    if requested not in names:
        raise UsageError(f"--linear_kernel {requested!r} unknown; choose from {', '.join(names)}")
    param = next(model.parameters())
    if requested == "auto":
        requested = "tuned" if param.device.type == "cpu" and param.dtype == torch.float32 else "torch"
    if requested != "tuned":
        return LinearKernel(requested, KERNELS[requested])
    weights = [m.weight for m in model.modules() if type(m) is nn.Linear and m.weight.dim() == 2]
    mm_rows = tune_row_counts(weights)
    return LinearKernel("tuned", _tuned(mm_rows), {"few_row_mm_rows": sorted(mm_rows)})


def bind_projection(module: nn.Module, kernel: LinearKernel) -> Projection:
    """A function applying `module`'s linear map with `kernel`."""
    if type(module) is nn.Linear:
        return kernel.bind(module)
    if hasattr(module, "bind_projection"):
        return module.bind_projection(lambda part: bind_projection(part, kernel))
    return module  # other linear modules (GPT-2's Conv1D) apply themselves
