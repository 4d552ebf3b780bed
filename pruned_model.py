"""PruneModel: applies one pruning method to a loaded model and reports exactly what it did.

Methods (registry `PRUNE_METHODS`):
  base     nothing, no calibration pass
  angular  remove the n consecutive layers whose input and output are closest in angular distance
           (Gromov et al. 2024), measured on held-out calibration text
  random   drop each layer independently with probability p (seeded local RNG)
  lowrank  factorize the linear maps of the cold layers (truncated SVD or activation-aware ASVD)
  gated    skip cold layers per sequence by their measured temperature (see compression.py)
Removed layers are deleted from the module list: they hold no parameters and run no compute.

The seed API of "Layer Compression and Skipping" is here too: `apply_low_rank_factorization`,
`update_model_with_gating`, `adjust_compression_level`, `get_metrics` (and `LayerCompressionAndSkipping` in
layer_compression_skipping.py).
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from errors import UsageError
from decoding import causal_mask
from compression import Gate, GatedLayer, LowRankCompressor, LowRankPlan
from layer_surgery import LayerCallCounter, count_parameters, keep_layers
from model_adapter import get_adapter


@dataclass
class PruneConfig:
    method: str = "base"
    prune_n: int | None = None
    dropout_threshold: float | None = None
    prune_seed: int = 42
    protected_layers: list[int] = field(default_factory=list)
    calibration_samples: int = 32
    calibration_max_length: int = 512
    calibration_batch_size: int = 8
    compression_rank: int | None = None
    compression_ratio: float | None = None
    lowrank_method: str = "svd"
    hot_path: list[int] | None = None  # default: first two and last layer
    skip_threshold: float = 0.1
    available_compute: float = 1.0


@dataclass
class Calibration:
    """Tokenized calibration texts and a description of where they came from (for the log)."""
    token_ids: list[list[int]]
    source: dict


class PruneModel:
    def __init__(self, model: nn.Module, tokenizer, config: PruneConfig,
                 calibration: Callable[[], Calibration] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.adapter = get_adapter(model)
        self._calibration = calibration
        self.original_layers = list(self.adapter.layers(model))
        self.num_layers_original = len(self.original_layers)
        self.num_parameters_original = count_parameters(model)
        self.kept_layers = list(range(self.num_layers_original))  # original indices, in order
        self.report: dict = {"method": config.method}
        self.counter = LayerCallCounter(self.original_layers)
        self.layer_params_original = [sum(p.numel() for p in layer.parameters()) for layer in self.original_layers]
        self.compressor: LowRankCompressor | None = None
        self.gate: Gate | None = None
        self._lowrank_plan: LowRankPlan | None = None
        self._base_threshold: float | None = None
        self._decision: dict = {}

    # ---- structure -------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.kept_layers)

    def remove_layers(self, original_indices: list[int]) -> None:
        drop = set(original_indices)
        keep_positions = [pos for pos, orig in enumerate(self.kept_layers) if orig not in drop]
        keep_layers(self.model, self.adapter, keep_positions)
        self.kept_layers = [self.kept_layers[p] for p in keep_positions]

    def map_exit_layer(self, exit_layer: int) -> int:
        """An exit layer E of the original model -> the number of kept layers below it."""
        return sum(1 for orig in self.kept_layers if orig < exit_layer)

    # ---- running -----------------------------------------------------------------------------------------
    def decision(self) -> dict:
        """What calibration decided (removed layers, ASVD scales): broadcast it so every rank prunes identically."""
        out = {"report": dict(self.report)}
        if self.compressor is not None and self.compressor.column_scales:
            out["column_scales"] = {k: v.cpu() for k, v in self.compressor.column_scales.items()}
        return out

    def apply(self, decision: dict | None = None) -> dict:
        """Apply the configured method; with `decision` (from another rank's `decision()`), reuse its calibration
        result instead of calibrating again."""
        self._decision = decision or {}
        validate_config(self.config)
        PRUNE_METHODS[self.config.method](self)
        kept = set(self.kept_layers)
        self.report.update({
            "removed_layers": [i for i in range(self.num_layers_original) if i not in kept],
            "kept_layers": list(self.kept_layers),
            "num_layers_before": self.num_layers_original,
            "num_layers_after": self.num_layers,
            "num_parameters_before": self.num_parameters_original,
            "num_parameters_after": count_parameters(self.model),
        })
        return self.report

    def start_counting(self) -> None:
        """Zero the layer-call counters (hooks are installed at construction)."""
        self.counter.reset()
        if self.gate:
            self.gate.reset_counts()

    def layer_call_counts(self) -> list[int]:
        return self.counter.snapshot()

    # ---- compression and skipping (seed API) ----------------------------------------------------------------
    def hot_path(self) -> list[int]:
        hot = self.config.hot_path if self.config.hot_path is not None else [0, 1, self.num_layers - 1]
        bad = sorted(i for i in hot if not 0 <= i < self.num_layers)
        if bad:
            raise UsageError(f"--hot_path {bad} out of range [0, {self.num_layers})")
        return sorted(set(hot))

    def apply_low_rank_factorization(self, rank: int | None = None, ratio: float | None = None,
                                     method: str | None = None) -> dict:
        """Factorize every targeted linear map of the cold layers. Rank from `rank`, else `ratio` (kept-parameter
        fraction per matrix), else the config. Always starts from the original dense weights."""
        rank = rank if rank is not None else (None if ratio is not None else self.config.compression_rank)
        ratio = ratio if ratio is not None else self.config.compression_ratio
        method = method or self.config.lowrank_method
        _check_lowrank_values(rank, ratio, method)
        if self.compressor is None:
            self.compressor = LowRankCompressor(self._inner_layers(), self.adapter, set(self.hot_path()))
        info = {}
        if method == "asvd" and "column_scales" in self._decision:
            device = self._device()
            self.compressor.column_scales = {k: v.to(device) for k, v in self._decision["column_scales"].items()}
            self.report["calibration"] = self._decision["report"].get("calibration")
        if method == "asvd" and not self.compressor.column_scales:
            t0 = time.perf_counter()
            batches, info = _calibration_batches(self)
            tensors = [torch.tensor([seq], device=self._device()) for batch in batches for seq in batch]
            self.compressor.measure_column_scales(self.model, tensors)
            info["seconds"] = time.perf_counter() - t0
            self.report["calibration"] = info
        self._lowrank_plan = LowRankPlan(rank, ratio, method)
        result = self.compressor.apply(self._lowrank_plan)
        before, after = result["targeted_params_before"], result["targeted_params_after"]
        self.report.update({"compression_rank": rank, "compression_ratio": ratio, "lowrank_method": method,
                            "hot_path": self.hot_path(), **result,
                            "targeted_params_kept_fraction": after / before if before else 1.0})
        return result

    def update_model_with_gating(self, skip_threshold: float | None = None, available_compute: float | None = None,
                                 per_sequence: bool = True, calibration_input_ids: torch.Tensor | None = None) -> Gate:
        """Wrap every decoder layer in a gate. With per_sequence=True (benchmark.py) each prefill measures the
        temperatures used for that sequence's decode steps; with False, the last measurement is reused, so a
        plain `model(input_ids)` skips once temperatures exist (measured on `calibration_input_ids` if given)."""
        threshold = self.config.skip_threshold if skip_threshold is None else skip_threshold
        compute = self.config.available_compute if available_compute is None else available_compute
        _check_gate_values(threshold, compute)
        if self.gate is None:
            self.gate = Gate(self.num_layers, set(self.hot_path()), threshold, compute, per_sequence)
            layers = self.adapter.layers(self.model)
            self.adapter.set_layers(self.model, nn.ModuleList(
                GatedLayer(layer, i, self.gate, self.adapter.attention(layer)) for i, layer in enumerate(layers)))
        self.gate.threshold, self.gate.compute, self.gate.per_sequence = threshold, compute, per_sequence
        self._base_threshold = threshold
        if calibration_input_ids is not None:
            with torch.inference_mode():
                saved = self.gate.per_sequence
                self.gate.per_sequence = True
                self.model(input_ids=calibration_input_ids.to(self._device()), use_cache=False)
                self.gate.per_sequence = saved
        self.report.update({"skip_threshold": threshold, "available_compute": compute, "hot_path": self.hot_path()})
        return self.gate

    def adjust_compression_level(self, available_compute: float) -> dict:
        """Rule (c in (0, 1]; the configured rank r0 and threshold t0 are the c = 1 settings):
        rank = max(1, round(c * r0)) (or ratio = c * ratio0), threshold = t0 + (1 - c) * (1 - t0), and the decode
        budget is ceil(c * L) layers. Lower compute never raises rank or lowers the threshold; re-factorization
        always starts from the original weights, so c = 1 restores the initial model exactly."""
        if not 0 < available_compute <= 1:
            raise UsageError(f"available_compute must be in (0, 1], got {available_compute}")
        c = available_compute
        out: dict = {"available_compute": c}
        if self.compressor is not None and self._lowrank_plan is not None:
            base = self.report.get("compression_rank"), self.report.get("compression_ratio")
            rank = max(1, round(c * base[0])) if base[0] is not None else None
            ratio = c * base[1] if base[0] is None else None
            self.compressor.apply(LowRankPlan(rank, ratio, self._lowrank_plan.method))
            out["rank"], out["ratio"] = rank, ratio
        if self.gate is not None:
            t0 = self._base_threshold
            self.gate.threshold = t0 + (1 - c) * (1 - t0)
            self.gate.compute = c
            if all(t is not None for t in self.gate.temperatures):
                self.gate.decide()
            out["skip_threshold"] = self.gate.threshold
        return out

    def get_metrics(self) -> dict:
        """What actually ran since counting started: layer calls executed/skipped, parameters, and matmul FLOPs
        (2 x weights per token position) saved against the original dense model."""
        executed_tokens = self.counter.token_snapshot()
        kept = {orig: pos for pos, orig in enumerate(self.kept_layers)}
        skipped_calls = [0] * self.num_layers_original
        skipped_tokens = [0] * self.num_layers_original
        if self.gate is not None:
            for orig, pos in kept.items():
                skipped_calls[orig], skipped_tokens[orig] = self.gate.skipped[pos], self.gate.skipped_tokens[pos]
        current = [0] * self.num_layers_original
        for orig, layer in zip(self.kept_layers, self._inner_layers()):
            current[orig] = sum(p.numel() for p in layer.parameters())
        executed = sum(self.counter.snapshot())
        skipped = sum(skipped_calls)
        baseline = sum(2 * p * (e + s) for p, e, s in zip(self.layer_params_original, executed_tokens, skipped_tokens))
        actual = sum(2 * p * e for p, e in zip(current, executed_tokens))
        params = count_parameters(self.model)
        metrics = {
            "layers_executed": executed, "layers_skipped": skipped,
            "skip_ratio": skipped / (executed + skipped) if executed + skipped else 0.0,
            "num_parameters": params, "num_parameters_original": self.num_parameters_original,
            "compression_ratio": params / self.num_parameters_original,
            "layer_flops_baseline": baseline, "layer_flops_saved": baseline - actual,
            "layer_flops_saved_fraction": (baseline - actual) / baseline if baseline else 0.0,
        }
        if self.gate is not None:
            calls = self.gate.decode_executed + self.gate.decode_skipped
            metrics.update({"decode_layers_executed": self.gate.decode_executed,
                            "decode_layers_skipped": self.gate.decode_skipped,
                            "decode_skip_ratio": self.gate.decode_skipped / calls if calls else 0.0})
        return metrics

    def sample_report(self) -> dict | None:
        return self.gate.sequence_report() if self.gate is not None else None

    def _inner_layers(self) -> list[nn.Module]:
        return [layer.layer if isinstance(layer, GatedLayer) else layer for layer in self.adapter.layers(self.model)]

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def calibration(self) -> Calibration:
        if self._calibration is None:
            raise UsageError(f"--prune_method {self.config.method} needs calibration data")
        return self._calibration()

    def save(self, directory: str) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


# ---- angular distance ---------------------------------------------------------------------------------------

@torch.inference_mode()
def last_token_states(model: nn.Module, batches: list[list[list[int]]], progress: bool = False) -> torch.Tensor:
    """Hidden state entering each decoder layer plus the last layer's output (before the final norm), at each
    sample's last real token, in float32: shape (num_layers + 1, num_samples, hidden).

    Batches are right-padded; under the causal mask real tokens never see the padding. Only the last-token vectors are kept."""
    adapter = get_adapter(model)
    layers = adapter.layers(model)
    device = next(model.parameters()).device
    pad = 0
    states = []
    for batch in tqdm(batches, desc="calibration", unit="batch", leave=False, file=sys.stderr, disable=not progress):
        lengths = torch.tensor([len(ids) for ids in batch], device=device)
        width = int(lengths.max())
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=device)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, device=device)
        positions = torch.arange(width, device=device)[None].expand(len(batch), -1)
        hidden = adapter.embed(model, ids, positions)
        extra = adapter.layer_kwargs(model, hidden, positions)
        mask = causal_mask(width, 0, hidden.dtype, device)
        rows = torch.arange(len(batch), device=device)
        picked = [hidden[rows, lengths - 1].float()]
        for layer in layers:
            hidden = adapter.call_layer(layer, hidden, extra, mask, None)
            picked.append(hidden[rows, lengths - 1].float())
        states.append(torch.stack(picked))
    return torch.cat(states, dim=1)


def angular_distances(states: torch.Tensor, n: int) -> list[float]:
    """d(l, l+n) = arccos(cos(x_l, x_{l+n})) / pi, averaged over samples, for l = 0 .. L-n."""
    out = []
    for l in range(states.shape[0] - n):
        cos = torch.nn.functional.cosine_similarity(states[l], states[l + n], dim=-1).clamp(-1.0, 1.0)
        out.append(float((torch.arccos(cos) / math.pi).mean()))
    return out


def _calibration_batches(pm: PruneModel) -> tuple[list[list[list[int]]], dict]:
    calib = pm.calibration()
    seqs = [ids[: pm.config.calibration_max_length] for ids in calib.token_ids[: pm.config.calibration_samples]]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise UsageError("calibration data is empty")
    bs = pm.config.calibration_batch_size
    info = dict(calib.source, samples=len(seqs), tokens=sum(len(s) for s in seqs),
                max_length=pm.config.calibration_max_length)
    return [seqs[i: i + bs] for i in range(0, len(seqs), bs)], info


def _angular(pm: PruneModel) -> None:
    n = pm.config.prune_n
    if n is None or not 1 <= n < pm.num_layers:
        raise UsageError(f"--prune_n must satisfy 1 <= n < {pm.num_layers} (model layers), got {n}")
    if pm._decision:
        decided = pm._decision["report"]
        pm.remove_layers(decided["removed_layers"])
        pm.report.update({k: decided[k] for k in ("prune_n", "distances", "best_start_layer", "best_distance",
                                                  "calibration")})
        return
    t0 = time.perf_counter()
    batches, info = _calibration_batches(pm)
    states = last_token_states(pm.model, batches, progress=True)
    distances = angular_distances(states, n)
    best = min(range(len(distances)), key=distances.__getitem__)
    info["seconds"] = time.perf_counter() - t0
    removed = [pm.kept_layers[i] for i in range(best, best + n)]
    pm.remove_layers(removed)
    pm.report.update({"prune_n": n, "distances": distances, "best_start_layer": removed[0],
                      "best_distance": distances[best], "calibration": info})


# ---- random dropout -------------------------------------------------------------------------------------------

def _random(pm: PruneModel) -> None:
    p = pm.config.dropout_threshold
    protected = set(pm.config.protected_layers or [])
    bad = sorted(i for i in protected if not 0 <= i < pm.num_layers_original)
    if bad:
        raise UsageError(f"--protected_layers {bad} out of range [0, {pm.num_layers_original})")
    rng = random.Random(pm.config.prune_seed)
    draws = [rng.random() for _ in range(pm.num_layers_original)]
    drop = [i for i, u in enumerate(draws) if u < p and i not in protected]
    if len(drop) == pm.num_layers_original:  # at least one layer must remain: keep the one least likely dropped
        drop.remove(max(range(len(draws)), key=draws.__getitem__))
    pm.remove_layers(drop)
    pm.report.update({"dropout_threshold": p, "prune_seed": pm.config.prune_seed,
                      "protected_layers": sorted(protected),
                      "realized_fraction": len(drop) / pm.num_layers_original})


def validate_config(cfg: PruneConfig) -> None:
    """Checks that need no model (the CLI runs them before loading one); depth-dependent checks happen in
    the methods."""
    if cfg.method not in PRUNE_METHODS:
        raise UsageError(f"--prune_method {cfg.method!r} unknown; choose from {', '.join(PRUNE_METHODS)}")
    if cfg.method == "angular" and (cfg.prune_n is None or cfg.prune_n < 1):
        raise UsageError(f"--prune_n must be >= 1 for --prune_method angular, got {cfg.prune_n}")
    if cfg.method == "random" and (cfg.dropout_threshold is None or not 0 <= cfg.dropout_threshold < 1):
        raise UsageError(f"--dropout_threshold must be in [0, 1) for --prune_method random, got {cfg.dropout_threshold}")
    if cfg.method == "lowrank" or cfg.compression_rank is not None or cfg.compression_ratio is not None:
        _check_lowrank_values(cfg.compression_rank, cfg.compression_ratio, cfg.lowrank_method)
    _check_gate_values(cfg.skip_threshold, cfg.available_compute)
    if cfg.calibration_samples < 1 or cfg.calibration_max_length < 2:
        raise UsageError("--calibration_samples must be >= 1 and --calibration_max_length >= 2")


def _check_lowrank_values(rank: int | None, ratio: float | None, method: str) -> None:
    if rank is None and ratio is None:
        raise UsageError("--prune_method lowrank needs --compression_rank or --compression_ratio")
    if rank is not None and rank < 1:
        raise UsageError(f"--compression_rank must be >= 1, got {rank}")
    if ratio is not None and not 0 < ratio <= 1:
        raise UsageError(f"--compression_ratio must be in (0, 1], got {ratio}")
    if method not in ("svd", "asvd"):
        raise UsageError(f"--lowrank_method must be svd or asvd, got {method!r}")


def _check_gate_values(threshold: float, compute: float) -> None:
    if not 0 <= threshold <= 1:
        raise UsageError(f"--skip_threshold must be in [0, 1], got {threshold}")
    if not 0 < compute <= 1:
        raise UsageError(f"--available_compute must be in (0, 1], got {compute}")


PRUNE_METHODS: dict[str, Callable[[PruneModel], None]] = {
    "base": lambda pm: None,
    "angular": _angular,
    "random": _random,
    "lowrank": lambda pm: pm.apply_low_rank_factorization(),
    "gated": lambda pm: pm.update_model_with_gating(),
}
