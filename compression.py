"""Low-rank factorization and gated (temperature-based) layer skipping.

Low rank: each targeted linear map W (out x in) of a cold layer becomes y = B(Ax) + bias with A = sqrt(S_r) V_r^T
(r x in) and B = U_r sqrt(S_r) (out x r) from a truncated SVD, so it holds r(in + out) weights instead of
in*out. `asvd` first scales input column j by s_j = mean|x_j|^0.5 (measured on calibration data), factorizes
W diag(s), and folds diag(s)^-1 back into A, so columns that see large activations are reconstructed better.

Gated skipping: during the prefill of a sequence every layer runs and its temperature is measured as the angular
distance arccos(cos(input, output))/pi at the last prompt token. For the decode steps of that sequence a cold layer
is skipped when its temperature is below the threshold, or when it falls outside the compute budget of
ceil(c * L) layers (hot path first, then the hottest). A skipped layer passes the residual through, writes no KV,
and stays skipped for the whole sequence, so the cache stays consistent.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from model_adapter import Adapter


# ---- low rank --------------------------------------------------------------------------------------------------

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
    side, not in the model) so the rank can be changed in either direction."""

    def __init__(self, layers: nn.ModuleList, adapter: Adapter, hot: set[int]) -> None:
        self.layers, self.adapter, self.hot = layers, adapter, hot
        self.originals: dict[tuple[int, str], nn.Module] = {}
        for i, layer in enumerate(layers):
            if i in hot:
                continue
            for name in adapter.linear_names:
                self.originals[(i, name)] = layer.get_submodule(name)
        self.column_scales: dict[tuple[int, str], torch.Tensor] = {}

    def targets(self):
        return self.originals.items()

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

    @torch.inference_mode()
    def measure_column_scales(self, model: nn.Module, batches) -> None:
        """ASVD scales: s_j = mean over calibration tokens of |x_j|, to the power 0.5, per targeted input."""
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
            for batch in batches:
                model(input_ids=batch)
        finally:
            for h in handles:
                h.remove()
        self.column_scales = {k: (sums[k] / counts[k]).clamp_min(1e-6).sqrt() for k in sums}


# ---- gated skipping ----------------------------------------------------------------------------------------------

@dataclass
class Gate:
    """Shared state of the gated layers of one model."""

    num_layers: int
    hot: set[int]
    threshold: float
    compute: float = 1.0
    per_sequence: bool = True  # measure temperatures at every prefill (benchmark); else reuse the last measurement
    temperatures: list[float | None] = field(default_factory=list)
    skip: set[int] = field(default_factory=set)
    executed: list[int] = field(default_factory=list)  # layer calls, per layer
    skipped: list[int] = field(default_factory=list)
    executed_tokens: list[int] = field(default_factory=list)
    skipped_tokens: list[int] = field(default_factory=list)
    decode_executed: int = 0
    decode_skipped: int = 0
    seq_decode_executed: int = 0
    seq_decode_skipped: int = 0
    tuple_outputs: bool = False

    def __post_init__(self) -> None:
        self.temperatures = [None] * self.num_layers
        self.reset_counts()

    def decide(self) -> None:
        """Skip set from measured temperatures: below-threshold cold layers, then the compute budget."""
        budget = max(1, math.ceil(self.compute * self.num_layers))
        cold = [i for i in range(self.num_layers) if i not in self.hot]
        candidates = [i for i in cold if self.temperatures[i] is not None and self.temperatures[i] >= self.threshold]
        run = set(self.hot)
        for i in sorted(candidates, key=lambda i: -self.temperatures[i]):
            if len(run) >= budget:
                break
            run.add(i)
        self.skip = {i for i in cold if i not in run}

    def reset_counts(self) -> None:
        n = self.num_layers
        self.executed, self.skipped = [0] * n, [0] * n
        self.executed_tokens, self.skipped_tokens = [0] * n, [0] * n
        self.decode_executed = self.decode_skipped = 0
        self.seq_decode_executed = self.seq_decode_skipped = 0

    def sequence_report(self) -> dict:
        """What the decode steps of the current (last) sequence did."""
        calls = self.seq_decode_executed + self.seq_decode_skipped
        return {"temperatures": [round(t, 5) if t is not None else None for t in self.temperatures],
                "decode_layers_run": [i for i in range(self.num_layers) if i not in self.skip],
                "decode_layers_skipped": sorted(self.skip),
                "decode_layer_calls": self.seq_decode_executed,
                "decode_skip_fraction": self.seq_decode_skipped / calls if calls else 0.0}


class GatedLayer(nn.Module):
    """Wraps one decoder layer; runs it or passes the residual stream through, as the gate decides."""

    def __init__(self, layer: nn.Module, index: int, gate: Gate, attention: nn.Module) -> None:
        super().__init__()
        self.layer, self.index, self.gate = layer, index, gate
        # the KV-cache slot of this layer, read at call time (a plain function, so the attention module is not
        # registered twice in the state dict)
        self.cache_index = lambda: attention.layer_idx
        params = list(inspect.signature(layer.forward).parameters)
        # some layers (GPT-2) receive the cache positionally; args exclude hidden_states
        self._cache_arg = params.index("past_key_values") - 1 if "past_key_values" in params else None
        # the attention module keeps its layer_idx; expose the wrapped layer's attributes HF code may read
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        gate, i = self.gate, self.index
        tokens = hidden_states.shape[1]
        cache = kwargs.get("past_key_values")
        if cache is None and self._cache_arg is not None and len(args) > self._cache_arg:
            cache = args[self._cache_arg]
        prefill = tokens > 1 or cache is None or cache.get_seq_length(self.cache_index()) == 0
        if prefill and (gate.per_sequence or gate.temperatures[i] is None):
            if i == 0:
                gate.seq_decode_executed = gate.seq_decode_skipped = 0
            out = self.layer(hidden_states, *args, **kwargs)
            gate.tuple_outputs = isinstance(out, tuple)
            h = out[0] if gate.tuple_outputs else out
            cos = torch.nn.functional.cosine_similarity(hidden_states[:, -1].detach().float(), h[:, -1].detach().float(),
                                                        dim=-1)
            gate.temperatures[i] = float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean())
            if i == gate.num_layers - 1:
                gate.decide()
            gate.executed[i] += 1
            gate.executed_tokens[i] += tokens
            return out
        if i in gate.skip:
            gate.skipped[i] += 1
            gate.skipped_tokens[i] += tokens
            if not prefill:
                gate.decode_skipped += 1
                gate.seq_decode_skipped += 1
            return (hidden_states,) if gate.tuple_outputs else hidden_states
        gate.executed[i] += 1
        gate.executed_tokens[i] += tokens
        if not prefill:
            gate.decode_executed += 1
            gate.seq_decode_executed += 1
        return self.layer(hidden_states, *args, **kwargs)
