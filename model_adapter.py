"""Architecture knowledge in one place: where the decoder layers, final norm and LM head live,
how the input is embedded, and how one decoder layer is called.

Everything else in the toolkit talks to a model only through an `Adapter`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from errors import UsageError


@dataclass(frozen=True)
class Adapter:
    """Paths (dotted attribute names, relative to the CausalLM) and the layer calling convention."""

    layers_path: str
    norm_path: str
    head_path: str
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    layer_kwargs: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, Any]]
    # names of the linear maps inside one decoder layer that low-rank compression may factorize
    linear_names: tuple[str, ...]
    attention_path: str  # attribute (inside a layer) of the self-attention module holding `layer_idx`
    # the linear maps that write a layer's attention and MLP outputs into the residual stream
    residual_out_names: tuple[str, ...]

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.set_submodule(self.layers_path, layers)

    def norm(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.norm_path)

    def head(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.head_path)

    def attention(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.attention_path)

    def call_layer(self, layer: nn.Module, hidden: torch.Tensor, extra: dict[str, Any],
                   mask: torch.Tensor | None, cache: Any) -> torch.Tensor:
        out = layer(hidden, attention_mask=mask, past_key_values=cache, use_cache=cache is not None, **extra)
        return out[0] if isinstance(out, tuple) else out


def _llama_embed(model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    return model.model.embed_tokens(input_ids)


def _llama_layer_kwargs(model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> dict[str, Any]:
    # rotary embeddings are computed once per forward and shared by every layer
    return {"position_ids": position_ids, "position_embeddings": model.model.rotary_emb(hidden, position_ids)}


def _gpt2_embed(model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    tr = model.transformer
    return tr.drop(tr.wte(input_ids) + tr.wpe(position_ids))


def _gpt2_layer_kwargs(model: nn.Module, hidden: torch.Tensor, position_ids: torch.Tensor) -> dict[str, Any]:
    return {}


LLAMA_FAMILY = Adapter(
    layers_path="model.layers", norm_path="model.norm", head_path="lm_head",
    embed=_llama_embed, layer_kwargs=_llama_layer_kwargs, attention_path="self_attn",
    linear_names=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    residual_out_names=("self_attn.o_proj", "mlp.down_proj"),
)

GPT2 = Adapter(
    layers_path="transformer.h", norm_path="transformer.ln_f", head_path="lm_head",
    embed=_gpt2_embed, layer_kwargs=_gpt2_layer_kwargs, attention_path="attn",
    linear_names=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    residual_out_names=("attn.c_proj", "mlp.c_proj"),
)

# model_type (from the HF config) -> adapter
ADAPTERS: dict[str, Adapter] = {
    "llama": LLAMA_FAMILY,
    "mistral": LLAMA_FAMILY,
    "qwen2": LLAMA_FAMILY,
    "qwen3": LLAMA_FAMILY,
    "gpt2": GPT2,
}


class UnsupportedModelError(UsageError):
    pass


def get_adapter(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]
