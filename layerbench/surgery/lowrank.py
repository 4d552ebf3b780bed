"""Low-rank factorization: each targeted linear map W (out x in) of a cold layer becomes y = B(Ax) + bias with
A = sqrt(S_r) V_r^T (r x in) and B = U_r sqrt(S_r) (out x r) from a truncated SVD, so it holds r(in + out)
weights instead of in*out. `asvd` first scales input column j by s_j = mean|x_j|^0.5 (measured on calibration data), factorizes
W diag(s), and folds diag(s)^-1 back into A, so columns that see large activations are reconstructed better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from layerbench.engine.engine import Engine, EngineOptions
from layerbench.models.families import Family
from layerbench.surgery.calibration import run_calibration

class LowRankLinear(nn.Module):
    """y = B(Ax) + bias, as two nn.Linear maps (so every engine optimization applies to them too)."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        r, n_in = A.shape
        self.A = nn.Linear(n_in, r, bias=False, device=A.device, dtype=A.dtype)
        self.B = nn.Linear(r, B.shape[0], bias=bias is not None, device=B.device, dtype=B.dtype)
        with torch.no_grad():
            self.A.weight.copy_(A)
            self.B.weight.copy_(B)
            if bias is not None:
                self.B.bias.copy_(bias)
        self.in_features, self.out_features, self.rank = n_in, B.shape[0], r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))

    def bind_projection(self, bind: Callable[[nn.Module], Callable]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The engine's kernel applied to each factor."""
        a, b = bind(self.A), bind(self.B)
        return lambda x: b(a(x))


def dense_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W as out x in, bias) of an nn.Linear or a GPT-2 Conv1D (which stores in x out)."""
    if isinstance(module, nn.Linear):
        return module.weight.detach(), module.bias.detach() if module.bias is not None else None
    if type(module).__name__ == "Conv1D":
        return module.weight.detach().t(), module.bias.detach()
    raise TypeError(f"cannot factorize {type(module).__name__}")


def factorize(W: torch.Tensor, rank: int, column_scale: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Truncated SVD W ~ B @ A (computed in float64); returns A, B and ||W - BA||_F / ||W||_F."""
    W64 = W.double()
    target = W64 * column_scale.double()[None, :] if column_scale is not None else W64
    U, S, Vh = torch.linalg.svd(target, full_matrices=False)
    root = S[:rank].sqrt()
    A = root[:, None] * Vh[:rank]
    B = U[:, :rank] * root[None, :]
    if column_scale is not None:
        A = A / column_scale.double()[None, :]
    error = float(torch.linalg.norm(W64 - B @ A) / torch.linalg.norm(W64))
    return A.to(W.dtype), B.to(W.dtype), error


def rank_for(out_features: int, in_features: int, rank: int | None, ratio: float | None) -> int:
    if rank is not None:
        return min(rank, out_features, in_features)
    return max(1, int(ratio * out_features * in_features / (out_features + in_features)))


@dataclass
class LowRankPlan:
    rank: int | None = None
    ratio: float | None = None
    method: str = "svd"


class LowRankCompressor:
    """Factorizes the targeted linear maps of the cold layers, always from the original dense weights (kept on the
    side, not in the model, until `release_originals`) so the rank can be changed in either direction."""

    def __init__(self, layers: list[nn.Module], family: Family, hot: set[int]) -> None:
        self.layers, self.family, self.hot = layers, family, hot
        self.originals: dict[tuple[int, str], nn.Module] = {}
        for i, layer in enumerate(layers):
            if i in hot:
                continue
            for name in family.linear_names:
                self.originals[(i, name)] = layer.get_submodule(name)
        self.column_scales: dict[tuple[int, str], torch.Tensor] = {}
        self.released = False

    def targets(self):
        return self.originals.items()

    def release_originals(self) -> None:
        """Drop the dense originals the model no longer uses (after this, the rank cannot change)."""
        used = {id(m) for layer in self.layers for m in layer.modules()}
        self.originals = {k: m for k, m in self.originals.items() if id(m) in used}
        self.released = True

    def retained_tensors(self) -> list[torch.Tensor]:
        """Tensors held for re-factorization that the model itself does not hold."""
        used = {id(m) for layer in self.layers for m in layer.modules()}
        return [p for key, m in self.originals.items() if id(m) not in used for p in m.parameters()]

    def apply(self, plan: LowRankPlan) -> dict:
        matrices, before, after = [], 0, 0
        for (i, name), original in self.targets():
            W, bias = dense_weight(original)
            out_f, in_f = W.shape
            r = rank_for(out_f, in_f, plan.rank, plan.ratio)
            dense_params = W.numel()
            before += dense_params
            entry = {"layer": i, "name": name, "shape": [out_f, in_f], "rank": r}
            if r * (out_f + in_f) >= out_f * in_f:
                self.layers[i].set_submodule(name, original)
                entry.update(dense=True, reason="r(m+n) >= mn", relative_error=0.0, params=dense_params)
                after += dense_params
            else:
                scale = self.column_scales.get((i, name)) if plan.method == "asvd" else None
                A, B, err = factorize(W, r, scale)
                self.layers[i].set_submodule(name, LowRankLinear(A, B, bias))
                entry.update(dense=False, relative_error=err, params=r * (out_f + in_f))
                after += r * (out_f + in_f)
            matrices.append(entry)
        return {"matrices": matrices, "targeted_params_before": before, "targeted_params_after": after}

    def restore(self) -> None:
        for (i, name), original in self.targets():
            self.layers[i].set_submodule(name, original)

    def column_scale_targets(self) -> list[list]:
        """[layer, name] of every targeted map (what the ASVD scales are measured for)."""
        return [[i, name] for (i, name) in self.originals]

    @torch.inference_mode()
    def measure_column_scales(self, model: nn.Module, sequences: list[list[int]]) -> list[list]:
        """ASVD scales: s_j = mean over calibration tokens of |x_j|, to the power 0.5, per targeted input (seen by
        forward pre-hooks, so the calibration engine calls the linear modules themselves). Returns
        [layer, name, scales] per targeted map."""
        sums: dict[tuple[int, str], torch.Tensor] = {}
        counts: dict[tuple[int, str], int] = {}
        handles = []
        for key, module in self.targets():
            def hook(mod, args, key=key):
                x = args[0].detach().float().abs().reshape(-1, args[0].shape[-1])
                sums[key] = sums.get(key, 0) + x.sum(0)
                counts[key] = counts.get(key, 0) + x.shape[0]
            handles.append(module.register_forward_pre_hook(hook))
        try:
            run_calibration(Engine(model, EngineOptions(linear_kernel="module")), sequences,
                            lambda *args: None, desc="asvd calibration")
        finally:
            for h in handles:
                h.remove()
        return [[i, name, (sums[(i, name)] / counts[(i, name)]).clamp_min(1e-6).sqrt()] for i, name in sorted(sums)]
