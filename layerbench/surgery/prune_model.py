"""PruneModel: applies one pruning method to a loaded model and reports exactly what it did.

The methods live one file each in `layerbench.surgery.methods` (registry `PRUNE_METHODS`); each returns a
`Decision` and this class applies it: removed layers are deleted from the module list and released (they hold
no memory and run no compute), with a fitted linear stand-in for each removed run when --stand_in asks;
factorization and gating go through the seed document's API (`CompressionAndSkipping`).

Index spaces: an ORIGINAL layer index counts the loaded model's decoder layers; `num_decoder_layers` counts the
layers kept; `num_blocks` counts what the engine runs (kept layers plus stand-ins).
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.models.addons import get_addons
from layerbench.models.families import get_family
from layerbench.surgery.calibration import Calibration, calibration_key, calibration_sequences
from layerbench.surgery.calibration_cache import CalibrationCache, value_digest
from layerbench.surgery.compression_and_skipping import CompressionAndSkipping
from layerbench.surgery.config import PruneConfig, method_of, validate_config
from layerbench.surgery.counting import LayerCallCounter
from layerbench.surgery.gating import unwrap
from layerbench.surgery.layers import count_parameters, keep_layers, tensor_bytes
from layerbench.surgery.method import Decision
from layerbench.surgery.stand_in import fit_stand_ins, insert_stand_ins


class PruneModel(CompressionAndSkipping):
    def __init__(self, model: nn.Module, tokenizer, config: PruneConfig,
                 calibration: Callable[[], Calibration] | None = None,
                 cache: CalibrationCache | None = None) -> None:
        super().__init__()
        self.cache = cache or CalibrationCache()
        self.surgery: list[dict] = []  # what changed the model so far, in order (part of calibration keys)
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.family = get_family(model)
        self._calibration = calibration
        layers = list(self.family.layers(model))
        self.num_layers_original = len(layers)
        self.num_parameters_original = count_parameters(model)
        self.num_bytes_original = self.num_bytes()
        self.layer_params_original = [sum(p.numel() for p in layer.parameters()) for layer in layers]
        self.kept_layers = list(range(self.num_layers_original))  # original indices, in order
        self.report: dict = {"method": config.method}
        self.counter = LayerCallCounter(self.num_layers_original)
        self.counter.track(dict(enumerate(layers)))
        self.decided: dict = {}  # another rank's calibration result (see decision())
        self.decided_now = Decision()  # what the method decided (or another rank's decision, replayed)
        self.stand_in_runs: list[tuple[int, int]] = []  # [start, end) in original indices, one per stand-in
        self._stand_ins: list[dict] = []  # fitted stand-in tensors (for decision())

    # ---- structure -------------------------------------------------------------------------------------
    @property
    def num_decoder_layers(self) -> int:
        """Decoder layers kept (stand-ins not counted)."""
        return len(self.kept_layers)

    @property
    def num_layers(self) -> int:
        """The seed document's name for `num_decoder_layers`."""
        return self.num_decoder_layers

    def layer_modules(self) -> list[nn.Module]:
        """The current decoder layers (inside any gating wrapper)."""
        return [unwrap(layer) for layer in self.family.layers(self.model)]

    def remove_layers(self, original_indices: list[int]) -> None:
        drop = set(original_indices)
        keep_positions = [pos for pos, orig in enumerate(self.kept_layers) if orig not in drop]
        keep_layers(self.model, self.family, keep_positions)
        self.kept_layers = [self.kept_layers[p] for p in keep_positions]
        self.counter.track(dict(zip(self.kept_layers, self.layer_modules())))
        self.surgery.append({"removed_layers": sorted(drop)})

    def remove(self, original_indices: list[int]) -> None:
        """Remove layers the way the config says: plainly, or with a fitted stand-in for each removed run."""
        if self.config.stand_in == "none":
            self.remove_layers(original_indices)
            return
        drop = set(original_indices)
        original_of = list(self.kept_layers)
        positions = [pos for pos, orig in enumerate(original_of) if orig in drop]
        self._stand_ins = self.decided.get("stand_ins") or fit_stand_ins(self, positions)
        self.remove_layers(original_indices)
        fitted = [{k: f[k] for k in ("start", "length", "W", "b", "first_update")} for f in self._stand_ins]
        self.surgery.append({"stand_ins": value_digest(fitted)})
        entries, runs = insert_stand_ins(self, self._stand_ins, original_of)
        self.stand_in_runs += runs
        self.report["stand_in"] = {"kind": self.config.stand_in, "runs": entries}

    @property
    def num_blocks(self) -> int:
        """Blocks the engine runs: kept layers plus stand-ins."""
        return self.num_decoder_layers + len(self.stand_in_runs)

    def map_exit_layer(self, exit_layer: int) -> int:
        """An exit layer E of the original model -> the number of engine blocks computing original layers below
        E: the kept layers, and the stand-ins of runs that end at or below E."""
        return (sum(1 for orig in self.kept_layers if orig < exit_layer)
                + sum(1 for _, end in self.stand_in_runs if end <= exit_layer))

    # ---- running -----------------------------------------------------------------------------------------
    def decision(self) -> dict:
        """What calibration decided (the method's Decision, fitted stand-ins, ASVD scales): broadcast it so every
        rank prunes identically without calibrating again."""
        out = {"report": dict(self.report), "decision": dataclasses.asdict(self.decided_now)}
        if self.compressor is not None and self.compressor.column_scales:
            out["column_scales"] = {k: v.cpu() for k, v in self.compressor.column_scales.items()}
        if self._stand_ins:
            out["stand_ins"] = self._stand_ins
        return out

    def apply(self, decision: dict | None = None) -> dict:
        """Decide with the configured method and apply the decision; with `decision` (from another rank's
        `decision()`), reuse its result instead of calibrating again."""
        self.decided = decision or {}
        validate_config(self.config)
        method = method_of(self.config)
        self.decided_now = (Decision(**self.decided["decision"]) if "decision" in self.decided
                            else method.decide(self))
        self._apply_decision(self.decided_now)
        if not self.config.keep_originals and self.compressor is not None:
            self.compressor.release_originals()
        kept = set(self.kept_layers)
        self.report.update({
            "removed_layers": [i for i in range(self.num_layers_original) if i not in kept],
            "kept_layers": list(self.kept_layers),
            "num_layers_before": self.num_layers_original,
            "num_layers_after": self.num_decoder_layers,
            "num_parameters_before": self.num_parameters_original,
            "num_parameters_after": count_parameters(self.model),
            "num_bytes_before": self.num_bytes_original,
            "num_bytes_after": self.num_bytes(),
        })
        return self.report

    def _apply_decision(self, decision: Decision) -> None:
        if decision.remove_layers:
            self.remove(list(decision.remove_layers))
        if decision.factorize is not None:
            self.apply_low_rank_factorization(**decision.factorize)
        if decision.gate:
            self.update_model_with_gating()
        self.report.update(decision.report)

    def attach(self, engine: Engine) -> Engine:
        """Let `engine` report layer calls to this model's counter and ask the gate (if any) what to skip."""
        if self.counter not in engine.counters:
            engine.counters.append(self.counter)
        engine.policy = self.gate
        return engine

    def start_counting(self) -> None:
        self.counter.reset()
        if self.gate:
            self.gate.reset_counts()

    @contextmanager
    def counting_paused(self) -> Iterator[None]:
        """Layer calls inside this block are not counted (scoring is not generation)."""
        self.counter.paused = True
        if self.gate is not None:
            self.gate.counting = False
        try:
            yield
        finally:
            self.counter.paused = False
            if self.gate is not None:
                self.gate.counting = True

    def layer_call_counts(self) -> list[int]:
        return self.counter.snapshot()

    # ---- reporting -------------------------------------------------------------------------------------
    def retained_tensors(self) -> list[torch.Tensor]:
        """Tensors held for the model outside its own parameters and buffers (dense originals kept for
        re-factorization)."""
        return self.compressor.retained_tensors() if self.compressor is not None else []

    def num_bytes(self) -> int:
        """Bytes of every tensor held for the model: parameters, buffers, and what this object retains for it."""
        return tensor_bytes([*self.model.parameters(), *self.model.buffers(), *self.retained_tensors()])

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
        for orig, layer in zip(self.kept_layers, self.layer_modules()):
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

    # ---- calibration products -----------------------------------------------------------------------------
    def calibration_sequences(self) -> tuple[list[list[int]], dict]:
        """The calibration texts (cut to the configured count and length) and their log entry."""
        return calibration_sequences(self.calibration(), self.config.calibration_samples,
                                     self.config.calibration_max_length)

    def model_state(self) -> dict:
        """What the current model computes, for calibration keys: the content hash of the loaded weights, the
        dtype and device type they run in, and every change made since loading."""
        weights, how = self.cache.weights_hash()
        like = next(self.model.parameters())
        return {"weights": weights, "weights_hashed_from": how, "dtype": str(like.dtype),
                "device": like.device.type, "surgery": self.surgery}

    def calibrated(self, product: str, sequences: list[list[int]], info: dict, params: dict,
                   compute: Callable[[], Any], uses_model: bool = True) -> Any:
        """`compute()` from the cache when an entry with the same key exists; the log's
        `prune.calibration_products` says which (cached, or the seconds spent)."""
        def key() -> dict:
            model = {"model": self.model_state()} if uses_model else {}
            return {**model, "calibration": calibration_key(sequences, info), "params": params}
        value, record = self.cache.fetch(product, key, compute)
        self.report.setdefault("calibration_products", {})[product] = record
        return value

    def calibration(self) -> Calibration:
        if self._calibration is None:
            raise UsageError(f"--prune_method {self.config.method} needs calibration data")
        return self._calibration()

    def save(self, directory: str) -> None:
        """Write a standard HF checkpoint (only a model without factor, gate or add-on modules is one)."""
        addons = get_addons(self.model)
        if self.compressor is not None or self.gate is not None or (addons is not None and not addons.is_empty()):
            raise UsageError("a standard checkpoint cannot describe factorized, gated, stand-in or exit-adapter "
                             "modules; only base, angular and random models without stand-ins can be saved")
        if not str(directory).strip():
            raise UsageError(f"--save_pruned_model must name a folder, got {directory!r}")
        try:
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        except OSError as exc:
            raise UsageError(f"--save_pruned_model {directory}: cannot write the checkpoint "
                             f"({exc.strerror or type(exc).__name__})") from exc

