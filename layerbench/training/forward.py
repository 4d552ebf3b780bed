"""The training pass: the Hugging Face model's own forward (its attention, masks and rotary embeddings), with each
decoder layer wrapped in a `LayerDropout` that skips the rows drawn for it and records the hidden state at the
active exits; the loss is computed here, inside the module's forward, so DDP and FSDP see one module.

What trains (`--trainable`): every parameter; only the decoder layers [0, E); or only a linear exit adapter at E
(h -> h + h W + b before the final norm, as the engine applies an exit adapter), zero-initialized, with the
backbone frozen and the layers from E on not run at all."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from layerbench.models.families import get_family
from layerbench.training.early_exit_loss import early_exit_loss
from layerbench.training.layer_dropout import LayerDropout


@dataclass
class StepPlan:
    """What one micro-batch's pass does: which rows skip which layer, and the exits whose loss counts."""
    skips: torch.Tensor | None  # (L, B) booleans, or None: no layer dropout
    weights: dict[int, float]  # exit E -> its normalized loss weight (E = L: the last layer)


class LayerSkipModel(nn.Module):
    def __init__(self, model: nn.Module, trainable: str = "all", exit_layer: int = -1) -> None:
        super().__init__()
        self.model = model
        self.family = get_family(model)
        layers = self.family.layers(model)
        self.num_layers = len(layers)
        self.family.set_layers(model, nn.ModuleList(LayerDropout(layer) for layer in layers))
        self.trainable, self.exit_layer = trainable, exit_layer
        self.adapter: nn.Linear | None = None
        if trainable == "exit_adapter":
            like = self.family.embedding(model).weight
            self.adapter = nn.Linear(like.shape[1], like.shape[1], device=like.device, dtype=like.dtype)
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)
        self._freeze()
        cap = self.family.final_softcap_attr
        self.final_softcap = getattr(model.config, cap, None) if cap else None

    def _freeze(self) -> None:
        if self.trainable == "all":
            return
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.trainable == "layers_below_exit":
            for wrapper in self.wrappers()[:self.exit_layer]:
                for p in wrapper.parameters():
                    p.requires_grad_(True)

    def wrappers(self) -> list[LayerDropout]:
        return list(self.family.layers(self.model))

    def logits_of(self, exit_layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """hidden (N, d) before the final norm -> logits (N, V) through the final norm and shared head (and the
        adapter at its exit)."""
        norm, head = self.family.final_norm(self.model), self.family.head(self.model)

        def logits(hidden: torch.Tensor) -> torch.Tensor:
            if self.adapter is not None and exit_layer == self.exit_layer:
                hidden = hidden + self.adapter(hidden)
            out = head(norm(hidden))
            return out if self.final_softcap is None else torch.tanh(out / self.final_softcap) * self.final_softcap
        return logits

    def plan_for_adapter(self, batch: int, device: torch.device) -> StepPlan:
        """Adapter training: layers from E on are skipped by every row; only the exit's loss counts."""
        skips = torch.zeros(self.num_layers, batch, dtype=torch.bool, device=device)
        skips[self.exit_layer:] = True
        return StepPlan(skips, {self.exit_layer: 1.0})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                plan: StepPlan) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(weighted loss, each active exit's cross-entropy)."""
        hidden: dict[int, torch.Tensor] = {}
        wrappers = self.wrappers()
        for index, wrapper in enumerate(wrappers):
            wrapper.skip = None if plan.skips is None else plan.skips[index]
            exit_layer = index + 1
            wrapper.record = (lambda h, e=exit_layer: hidden.__setitem__(e, h)) if exit_layer in plan.weights else None
        try:
            self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            for wrapper in wrappers:
                wrapper.skip, wrapper.record = None, None
        return early_exit_loss(self.logits_of, hidden, labels, plan.weights)

    def restore_layers(self) -> nn.Module:
        """Put the original decoder layers back (for saving); returns the Hugging Face model."""
        self.family.set_layers(self.model, nn.ModuleList(w.layer for w in self.wrappers()))
        return self.model
