"""The seed document's compression-and-skipping API, as methods of PruneModel: `apply_low_rank_factorization`,
`update_model_with_gating`, `adjust_compression_level` (and `get_metrics`, on PruneModel itself)."""
from __future__ import annotations

import numbers
import time

import torch
from torch import nn

from layerbench.engine.engine import PREFILL, Engine
from layerbench.errors import UsageError
from layerbench.surgery.calibration_cache import value_digest
from layerbench.surgery.methods.gated import check_gate_values
from layerbench.surgery.methods.lowrank import check_lowrank_values
from layerbench.surgery.gating import Gate, GatedLayer
from layerbench.surgery.lowrank import LowRankCompressor, LowRankPlan


class CompressionAndSkipping:
    """Mixin: expects `model`, `family`, `config`, `report`, `num_decoder_layers`, `decided`, `surgery`,
    `layer_modules()`, `calibration_sequences()` and `calibrated()` from PruneModel."""

    def __init__(self) -> None:
        self.compressor: LowRankCompressor | None = None
        self.gate: Gate | None = None
        self._lowrank_plan: LowRankPlan | None = None
        self._base_threshold: float | None = None

    def hot_path(self) -> list[int]:
        hot = self.config.hot_path if self.config.hot_path is not None else [0, 1, self.num_decoder_layers - 1]
        bad = sorted(i for i in hot if not 0 <= i < self.num_decoder_layers)
        if bad:
            raise UsageError(f"--hot_path {bad} out of range [0, {self.num_decoder_layers})")
        return sorted(set(hot))

    def apply_low_rank_factorization(self, rank: int | None = None, ratio: float | None = None,
                                     method: str | None = None) -> dict:
        """Factorize every targeted linear map of the cold layers. Rank from `rank`, else `ratio` (kept-parameter
        fraction per matrix), else the config. Always starts from the original dense weights."""
        if rank is None and ratio is None:
            rank, ratio = self.config.compression_rank, self.config.compression_ratio
        method = method or self.config.lowrank_method
        check_lowrank_values(rank, ratio, method)
        if self.compressor is None:
            self.compressor = LowRankCompressor(self.layer_modules(), self.family, set(self.hot_path()))
        if method == "asvd":
            self._asvd_scales()
        self._lowrank_plan = LowRankPlan(rank, ratio, method)
        result = self.compressor.apply(self._lowrank_plan)
        self.surgery.append({"factorized": [rank, ratio, method], "hot_path": self.hot_path(),
                             "column_scales": value_digest([[i, n, v] for (i, n), v in
                                                            sorted(self.compressor.column_scales.items())])
                             if method == "asvd" else None})
        before, after = result["targeted_params_before"], result["targeted_params_after"]
        self.report.update({"compression_rank": rank, "compression_ratio": ratio, "lowrank_method": method,
                            "hot_path": self.hot_path(), **result,
                            "targeted_params_kept_fraction": after / before if before else 1.0})
        return result

    def _asvd_scales(self) -> None:
        if "column_scales" in self.decided:
            device = next(self.model.parameters()).device
            self.compressor.column_scales = {k: v.to(device) for k, v in self.decided["column_scales"].items()}
            self.report["calibration"] = self.decided["report"].get("calibration")
        if self.compressor.column_scales:
            return
        t0 = time.perf_counter()
        seqs, info = self.calibration_sequences()
        targets = sorted(self.compressor.column_scale_targets())
        scales = self.calibrated("asvd_column_scales", seqs, info, {"targets": targets},
                                 lambda: self.compressor.measure_column_scales(self.model, seqs))
        device = next(self.model.parameters()).device
        self.compressor.column_scales = {(i, name): v.to(device) for i, name, v in scales}
        info["seconds"] = time.perf_counter() - t0
        self.report["calibration"] = info

    def update_model_with_gating(self, skip_threshold: float | None = None, available_compute: float | None = None,
                                 per_sequence: bool = True, calibration_input_ids: torch.Tensor | None = None) -> Gate:
        """Gate every decoder layer. In the benchmark (per_sequence=True) each prefill measures the temperatures
        used for that sequence's decode steps; with False the last measurement is reused. Hugging Face's own
        forward (`model(input_ids)`) skips once temperatures exist (measured on `calibration_input_ids` if
        given, else by the first forward)."""
        threshold = self.config.skip_threshold if skip_threshold is None else skip_threshold
        compute = self.config.available_compute if available_compute is None else available_compute
        check_gate_values(threshold, compute)
        if self.gate is None:
            self.gate = Gate(self.num_decoder_layers, set(self.hot_path()), threshold, compute, per_sequence)
            layers = self.family.layers(self.model)
            self.family.set_layers(self.model, nn.ModuleList(
                GatedLayer(layer, i, self.gate) for i, layer in enumerate(layers)))
        self.gate.threshold, self.gate.compute, self.gate.per_sequence = threshold, compute, per_sequence
        self._base_threshold = threshold
        self.surgery.append({"gate": [threshold, compute, self.hot_path()]})
        if calibration_input_ids is not None:
            self._measure_temperatures(calibration_input_ids)
        self.report.update({"skip_threshold": threshold, "available_compute": compute, "hot_path": self.hot_path()})
        return self.gate

    @torch.inference_mode()
    def _measure_temperatures(self, input_ids: torch.Tensor) -> None:
        engine = Engine(self.model)
        engine.policy = self.gate
        saved, self.gate.per_sequence = self.gate.per_sequence, True
        try:
            ids = input_ids.to(engine.device)
            engine.run(engine.new_cache(ids.shape[1]), 0, 0, engine.num_blocks, input_ids=ids, phase=PREFILL)
        finally:
            self.gate.per_sequence = saved

    def adjust_compression_level(self, available_compute: float) -> dict:
        """Rule (c in (0, 1]; the configured rank r0 and threshold t0 are the c = 1 settings):
        rank = max(1, round(c * r0)) (or ratio = c * ratio0), threshold = t0 + (1 - c) * (1 - t0), and the decode
        budget is ceil(c * L) layers. Lower compute never raises rank or lowers the threshold; re-factorization
        always starts from the original weights, so c = 1 restores the initial model exactly. Build or
        `prepare()` engines after calling this."""
        if isinstance(available_compute, bool) or not isinstance(available_compute, numbers.Real):
            raise UsageError(f"available_compute must be a number in (0, 1], got {available_compute!r} "
                             f"({type(available_compute).__name__})")
        if not 0 < available_compute <= 1:
            raise UsageError(f"available_compute must be in (0, 1], got {available_compute}")
        c = available_compute
        out: dict = {"available_compute": c}
        if self.compressor is not None and self._lowrank_plan is not None:
            if self.compressor.released:
                raise UsageError("adjust_compression_level: the dense originals were released "
                                 "(PruneConfig(keep_originals=False)); the rank can no longer change")
            base = self.report.get("compression_rank"), self.report.get("compression_ratio")
            rank = max(1, round(c * base[0])) if base[0] is not None else None
            ratio = c * base[1] if base[0] is None else None
            self.compressor.apply(LowRankPlan(rank, ratio, self._lowrank_plan.method))
            self.surgery.append({"lowrank_adjusted": [rank, ratio]})
            out["rank"], out["ratio"] = rank, ratio
            out["originals_kept_in"] = "PruneModel.compressor.originals (same device as the model)"
        if self.gate is not None:
            t0 = self._base_threshold
            self.gate.threshold = t0 + (1 - c) * (1 - t0)
            self.gate.compute = c
            if self.gate.measured:
                self.gate.decide()
            out["skip_threshold"] = self.gate.threshold
        return out
