"""The seed document's API, backed by PruneModel:

    lcs = LayerCompressionAndSkipping(model, compression_rank=8,
                                      hot_path_indices=[0, 1, model.config.num_hidden_layers - 1], skip_threshold=0.3)
    lcs.apply_low_rank_factorization()
    lcs.update_model_with_gating()
    lcs.adjust_compression_level(available_compute=0.5)
    outputs = model(input_ids)       # skipping happens inside the model's own forward
    metrics = lcs.get_metrics()

Temperatures are measured, never guessed: the first forward after `update_model_with_gating()` runs every layer
and measures them (or pass `calibration_input_ids`); later forwards skip the cold layers below the threshold.
"""
from __future__ import annotations

import torch
from torch import nn

from layerbench.surgery.config import PruneConfig
from layerbench.surgery.prune_model import PruneModel


class LayerCompressionAndSkipping(PruneModel):
    def __init__(self, model: nn.Module, compression_rank: int = 8, hot_path_indices: list[int] | None = None,
                 skip_threshold: float = 0.3) -> None:
        super().__init__(model, None, PruneConfig(method="base", compression_rank=compression_rank,
                                                  hot_path=hot_path_indices, skip_threshold=skip_threshold))

    def update_model_with_gating(self, skip_threshold: float | None = None, available_compute: float | None = None,
                                 per_sequence: bool = False, calibration_input_ids: torch.Tensor | None = None):
        return super().update_model_with_gating(skip_threshold, available_compute, per_sequence,
                                                calibration_input_ids)
